"""What a package recipe is, and the registry of recipes by name.

A recipe is one module under embedbuild/packages/: a class that subclasses the
shared build infrastructure of its build system (embedbuild/buildsys/: kbuild,
plain make, autotools) and sets only data, registered with ``@recipe``:

- ``source``: the name of its input in the lock (boards/common/lock.toml), and
  ``extra_sources`` any more (a patch series, a signature file);
- ``depends``: library recipes it links against, by name (their staged headers and
  static libraries form a per-toolchain sysroot for its build);
- how it is configured and built: the infrastructure's settings and hooks;
- ``installs``: the files it puts into the image (checked after the build: each
  pattern matches, and nothing else is there); a library's ``stages``: what it
  gives the packages that link it;
- ``kernel``: the kernel symbols it needs, checked against the board's final
  kernel config;
- ``services``: default service definitions a system can use by name.

The planner knows no package by name: it asks this registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from embedbuild.errors import BoardError
from embedbuild.step import Step
from embedbuild.toolchain import Toolchain

if TYPE_CHECKING:
    from embedbuild.model.board import Board


@dataclass
class Target:
    """What a recipe builds for: a board's toolchain, and how to get the steps it needs.

    Args:
        board: the board (its [userland] options, e.g. busybox's fragments).
        toolchain: the board's cross toolchain.
        jobs: cores a compile may use.
        source: the unpacked source step of a lock name.
        package: the build step of another recipe (a library it depends on).
        libc: the libc recipe every other recipe builds against (the board's
            ``[userland] libc``); None: the cross toolchain's own C library.
    """

    board: Board
    toolchain: Toolchain
    jobs: int
    source: Callable[[str], Step]
    package: Callable[[str], Step]
    libc: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a board cannot build a package as its system asks: the message, the key
    path in board.toml it is about, and what to do."""

    message: str
    key: tuple[str, ...]
    hint: str


@dataclass
class PackageSteps:
    """The steps a recipe makes: ``build`` (outputs ``root``: files for the image; a
    library also ``stage``: headers and static libraries for the packages that link it)
    and any others by role suffix (busybox's ``config``)."""

    build: Step
    extra: dict[str, Step] = field(default_factory=dict)


class Recipe:
    """A userland package. Subclass a build infrastructure (embedbuild/buildsys/), set
    the data below, and register it with ``@recipe``.

    Class attributes:
        name: the package's name (set by ``@recipe``); systems list it in ``packages``.
        source: its input's name in the lock.
        extra_sources: more locked inputs, role -> name in the lock (wpa's Debian patch
            series); each is a dependency ``src-ROLE`` of the build, unpacked like
            ``source`` (a locked file that is no archive is kept as it is).
        version: this recipe's code version: bump it when the build changes its output.
        library: a library: its ``stage`` output is linked by others; ``installs`` may
            stay empty (static linking puts nothing of it into the image).
        depends: library recipes it links against.
        installs: glob patterns (image paths) of the files it puts into the image.
        stages: glob patterns of what a library stages for its users.
        kernel: Kconfig symbols (without CONFIG_) and the values it needs at run time.
        services: default service definitions it offers, by service name: the fields of
            a system's [[services]] table; a system uses one with ``use = "NAME"``.
        dirs: folders the package needs in the image at run time (made empty).
        base: in every system's image (busybox, the base userland).
        libc: a C library (musl): a board whose ``[userland] libc`` names it builds every
            other recipe against its stage (embedbuild/buildsys/libc.py says what
            that stage holds); it is built with the bare cross compiler.
    """

    name: ClassVar[str] = ""
    source: ClassVar[str]
    extra_sources: ClassVar[Mapping[str, str]] = {}
    version: ClassVar[int] = 1
    library: ClassVar[bool] = False
    depends: ClassVar[tuple[str, ...]] = ()
    installs: ClassVar[tuple[str, ...]] = ()
    stages: ClassVar[tuple[str, ...]] = ()
    kernel: ClassVar[Mapping[str, str]] = {}
    services: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    dirs: ClassVar[tuple[str, ...]] = ()
    base: ClassVar[bool] = False
    libc: ClassVar[bool] = False
    # The shared infrastructure's own code version, added to the recipe's in the key:
    # both only go up, so their sum never repeats (see Step.version).
    revision: ClassVar[int] = 0

    @property
    def label(self) -> str:
        """What the image's component list and `embedbuild size` call it."""
        return self.name if self.base else f"package {self.name}"

    @property
    def sources(self) -> list[str]:
        """Every lock name the recipe builds from: its source, then the extra ones."""
        return [self.source, *self.extra_sources.values()]

    def source_deps(self, target: Target) -> dict[str, Step]:
        """The unpacked inputs of its build by role: ``tree`` and ``src-ROLE``."""
        return {"tree": target.source(self.source),
                **{f"src-{role}": target.source(name)
                   for role, name in sorted(self.extra_sources.items())}}

    @property
    def step_version(self) -> int:
        """The version its steps carry in their keys: recipe and infrastructure."""
        return self.version + self.revision

    @property
    def compiles(self) -> bool:
        """Whether its build runs the compiler (a data package's does not): only then
        does it build against the board's libc recipe."""
        return True

    def refusal(self, board: Board) -> Refusal | None:
        """Why this board's system cannot have the package as it asks (checked when the
        board loads), or None."""
        return None

    def key_inputs(self, target: Target) -> dict[str, Any]:
        """Data besides the toolchain and the source that changes what the build writes
        (the infrastructure adds its settings)."""
        return {}

    def plan(self, target: Target) -> PackageSteps:
        """The recipe's steps for a target (the infrastructure implements it)."""
        raise NotImplementedError


REGISTRY: dict[str, Recipe] = {}


def recipe(name: str) -> Callable[[type[Recipe]], type[Recipe]]:
    """Register the decorated Recipe subclass as package ``name``; a name is registered
    once, and a service name is offered by one package only."""

    def register(cls: type[Recipe]) -> type[Recipe]:
        if name in REGISTRY:
            raise RuntimeError(f"package {name!r} is registered twice")
        for other in REGISTRY.values():
            if clash := set(other.services) & set(cls.services):
                raise RuntimeError(f"service {sorted(clash)[0]!r} is offered by both "
                                   f"{other.name} and {name}")
        cls.name = name
        REGISTRY[name] = cls()
        return cls

    return register


def closure(registry: Mapping[str, Recipe], names: list[str]) -> list[str]:
    """``names`` and every library they depend on, each once, dependencies first; an
    unknown name or a cycle is an error naming it."""
    done: list[str] = []
    state: dict[str, int] = {}  # 1: visiting, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if name not in registry:
            by = f" (a dependency of {path[-1]})" if path else ""
            raise BoardError(f"unknown package {name!r}{by}",
                             hint=f"known packages: {', '.join(sorted(registry))}")
        if state.get(name) == 1:
            raise BoardError(f"packages depend on each other in a cycle: "
                             f"{' -> '.join([*path[path.index(name):], name])}")
        state[name] = 1
        for dep in registry[name].depends:
            if dep in registry and not registry[dep].library:
                raise BoardError(f"package {name} depends on {dep}, which is not a library")
            visit(dep, [*path, name])
        state[name] = 2
        done.append(name)

    for n in names:
        visit(n, [])
    return done
