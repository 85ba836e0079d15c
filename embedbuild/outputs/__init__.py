"""Outputs: what a build result holds, one module per output (the kernel, the uImage,
the TFTP boot bundle, the FIT flash image, the SD-card image).

Each module registers itself with ``@output``: its name, when it applies to a
board, and a function that asks the planner for the steps it needs and says
which of their files go into the result. The core knows no output by name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from embedbuild.model.board import Board
from embedbuild.step import Step

if TYPE_CHECKING:
    from embedbuild.plan import Planner


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


@dataclass
class Published:
    """What one output contributes to the result.

    Args:
        files: files copied into the result.
        checks: steps that must succeed for the result to exist (they add no file).
        manifest: fields this output sets in manifest.json (e.g. the TFTP boot commands).
        header: a step output with facts read back from an image (a uImage's header).
        facts: manifest.json field -> the step output (JSON) it is filled from (the SD
            card's layout, as read back).
    """

    files: list[Pick] = field(default_factory=list)
    checks: list[Step] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    header: tuple[Step, str] | None = None
    facts: dict[str, tuple[Step, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Output:
    """A registered output."""

    name: str
    doc: str
    applies: Callable[[Board], bool]
    plan: Callable[[Planner], Published]


REGISTRY: dict[str, Output] = {}


def output(name: str, applies: Callable[[Board], bool]):
    """Register the decorated ``plan(planner) -> Published`` as output ``name``."""

    def register(plan: Callable[[Planner], Published]) -> Callable[[Planner], Published]:
        if name in REGISTRY:
            raise RuntimeError(f"output {name!r} is registered twice")
        REGISTRY[name] = Output(name, (plan.__doc__ or "").strip().split("\n")[0], applies,
                                plan)
        return plan

    return register


def applicable(board: Board) -> list[Output]:
    """The outputs that apply to a board, in registration order."""
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{mod}")
    return [o for o in REGISTRY.values() if o.applies(board)]
