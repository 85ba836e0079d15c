"""What an output is: one module under embedbuild/outputs/ per thing a build result
holds (the kernel, the uImage, the TFTP boot bundle, the FIT flash image, the SD-card
image, the initramfs), registered with ``@output``.

An output says when it applies to a board, asks the planner for the steps it needs
(``plan``), and declares what it adds to the result: its files, the checks that must
pass, its sections of manifest.json (``sections``: top-level key -> type, filled from
plan-time data or from a step's JSON output) and its lines of `embedbuild size`
(``size``). The result step, the manifest and `size` know no output by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from embedbuild.model.board import Board
from embedbuild.step import Step


class PlanContext(Protocol):
    """What an output may ask the planner (embedbuild/plan.py implements it)."""

    board: Board

    def get(self, role: str) -> Step:
        """The step of a role (kernel, dtb, initramfs, ...), made once."""

    def add(self, role: str, make: Callable[[], Step]) -> Step:
        """The step of an output's own role, made by ``make`` the first time."""

    def boot_image(self) -> tuple[Step, str]:
        """(step, output) of the file U-Boot boots."""

    @property
    def has_dtb(self) -> bool:
        """Whether the board has a DTB of its own."""


@dataclass(frozen=True)
class Pick:
    """A file of a step that goes into the result.

    Args:
        role: what it is for, in manifest.json (kernel, initramfs, dtb, bootloader, ...).
        step: the step that writes it.
        output: the step's declared output name.
    """

    role: str
    step: Step
    output: str


@dataclass(frozen=True)
class Fact:
    """A step's JSON output (or the named keys of it) that fills a manifest section
    when the result is made: facts read back from a built image."""

    step: Step
    output: str
    keys: tuple[str, ...] | None = None


@dataclass
class Published:
    """What one output contributes to the result.

    Args:
        files: files copied into the result.
        checks: steps that must succeed for the result to exist (they add no file).
        manifest: manifest sections known when planning (section key -> value).
        facts: manifest sections read when the result is made (section key -> Fact: an
            image's header, the SD card's layout, as read back). Two outputs may fill one
            section (a table) with different keys: the uImage's header adds its addresses
            to the kernel's section.
    """

    files: list[Pick] = field(default_factory=list)
    checks: list[Step] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Fact] = field(default_factory=dict)


@dataclass(frozen=True)
class SizeLine:
    """A line of `embedbuild size`: what, bytes raw (if it has a raw size) and as stored;
    ``loaded``: bytes U-Boot loads for a boot (summed into "total loaded")."""

    what: str
    raw: int | None = None
    stored: int | None = None
    loaded: int = 0


@dataclass(frozen=True)
class Output:
    """A registered output (see the module's docstring)."""

    name: str
    doc: str
    applies: Callable[[Board], bool]
    plan: Callable[[PlanContext], Published]
    sections: dict[str, Any]
    size: Callable[[Any], list[SizeLine]] | None


REGISTRY: dict[str, Output] = {}


def section_types() -> dict[str, Any]:
    """Every manifest section the registered outputs declare: key -> type. Two outputs
    may declare one key (both write the flash image's name) with the same type."""
    out: dict[str, Any] = {}
    for o in REGISTRY.values():
        for key, typ in o.sections.items():
            if out.setdefault(key, typ) != typ:
                raise RuntimeError(f"manifest section {key!r} is declared with two types")
    return out


def output(name: str, applies: Callable[[Board], bool], sections: dict[str, Any] | None = None,
           size: Callable[[Any], list[SizeLine]] | None = None):
    """Register the decorated ``plan(planner) -> Published`` as output ``name``, with the
    manifest sections it writes and its lines of `size` (``size(manifest)``)."""

    def register(plan: Callable[[PlanContext], Published]) -> Callable[[PlanContext], Published]:
        if name in REGISTRY:
            raise RuntimeError(f"output {name!r} is registered twice")
        REGISTRY[name] = Output(name, (plan.__doc__ or "").strip().split("\n")[0], applies,
                                plan, dict(sections or {}), size)
        return plan

    return register
