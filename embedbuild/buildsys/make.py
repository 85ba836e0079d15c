"""Packages built with their own configure script (if any) and plain make, in a
writable copy of their source (dropbear; hostapd and wpa_supplicant, whose build
reads a ``.config`` of make variables: ``dotconfig`` writes it from the package's
template, checked)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from embedbuild.buildsys.common import (
    check_binaries,
    check_declared,
    copy_tree,
    cross_env,
    identity_of,
    library_deps,
    links_libc,
    stage_sysroot,
)
from embedbuild.errors import StepError
from embedbuild.recipe import PackageSteps, Recipe, Target
from embedbuild.step import Context, Step

_DOTCONFIG_LINE = re.compile(r"^#?\s*(CONFIG_[A-Za-z0-9_]+)\s*=")


def dotconfig(template: str, settings: Mapping[str, str | None], what: str,
              new: Mapping[str, str] | None = None) -> str:
    """A make-included ``.config`` (hostapd's defconfig style: ``CONFIG_X=y`` lines,
    ``#CONFIG_X=y`` for off) from its template: each name in ``settings`` set to its
    value, or commented out for None. A name the template does not mention is an error
    (make would silently ignore a typo); ``new`` adds names the template lacks."""
    left = dict(settings)
    out = []
    for line in template.splitlines():
        m = _DOTCONFIG_LINE.match(line)
        if m and m.group(1) in left:
            value = left.pop(m.group(1))
            if value is None:
                out.append(line if line.startswith("#") else f"#{line}")
            else:
                out.append(f"{m.group(1)}={value}")
        else:
            out.append(line)
    if left:
        raise StepError(f"{what}: the template names no {', '.join(sorted(left))}",
                        hint="check the option's spelling against the package's defconfig, "
                        "or add it as a new option")
    out += [f"{k}={v}" for k, v in (new or {}).items()]
    return "\n".join(out) + "\n"


class MakeRecipe(Recipe):
    """A package with an optional configure script of its own and a Makefile.

    Class attributes:
        configure_args: arguments to ./configure (``--host`` is added); None: the
            package has no configure script.
        make_args: arguments to make (targets, variables); None: nothing to compile (a
            data package, such as a regulatory database: ``install`` takes its files).
        subdir: the folder of the tree configure and make run in (hostapd/).
    Hooks: ``prepare`` (write option headers or a .config into the copy, apply patches),
    ``environment`` (flags the Makefile takes from the environment) and ``install``
    (put the files into the image tree; default: ``make install DESTDIR=``).
    """

    configure_args: ClassVar[tuple[str, ...] | None] = None
    make_args: ClassVar[tuple[str, ...] | None] = ()
    subdir: ClassVar[str] = ""

    def environment(self, env: dict[str, str], target: Target) -> dict[str, str]:
        """The environment of configure and make: the cross environment (``CC``, the
        staging sysroot's flags) with whatever the package's Makefile wants besides."""
        return env

    @property
    def compiles(self) -> bool:
        return self.configure_args is not None or self.make_args is not None

    def prepare(self, ctx: Context, build: Path, target: Target) -> None:
        """Adjust the writable source copy before configure (option files)."""

    def install(self, ctx: Context, build: Path, root: Path, target: Target,
                env: dict[str, str]) -> None:
        """Put the built files into ``root``, the package's image tree."""
        ctx.run.run(["make", f"DESTDIR={root}", "install"], cwd=build, env=env,
                    what=f"installing {self.name}")

    def plan(self, target: Target) -> PackageSteps:
        tc = target.toolchain
        libc = links_libc(self, target)  # built against the board's libc recipe
        libs = library_deps(self, target)

        def build(ctx: Context) -> None:
            b = ctx.scratch / "build"
            copy_tree(ctx, ctx.input("tree", "tree"), b, self.name)
            self.prepare(ctx, b, target)
            env = self.environment(cross_env(tc, stage_sysroot(ctx), libc),
                                   target)
            where = b / self.subdir
            if self.configure_args is not None:
                ctx.run.run(["./configure", f"--host={tc.triplet}", *self.configure_args],
                            cwd=where, env=env, what=f"configuring {self.name}")
            if self.make_args is not None:
                ctx.run.run(["make", f"-j{ctx.jobs}", *self.make_args], cwd=where, env=env,
                            what=f"building {self.name}")
            root = ctx.output("root")
            root.mkdir(exist_ok=True)
            self.install(ctx, b, root, target, env)
            check_declared(root, self.installs, self.name)
            check_binaries(root, identity_of(tc), self.name,
                           libc=libc)

        return PackageSteps(Step(
            kind=self.name,
            name=f"{self.name}-{tc.triplet}",
            version=self.step_version,
            inputs={"toolchain": tc.identity(), **self.key_inputs(target)},
            deps={**self.source_deps(target), **libs},
            build=build,
            outputs={"root": "root"},
            jobs=target.jobs,
            compilers=tc.compilers,
        ))
