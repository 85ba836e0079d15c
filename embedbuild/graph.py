"""Board -> the graph of steps that builds it (planning only: nothing runs here)."""

from __future__ import annotations

from dataclasses import dataclass

from embedbuild.model.board import Board
from embedbuild.plan import Step, cores
from embedbuild.steps import kernel as k
from embedbuild.steps.patch import patched_step
from embedbuild.steps.result import result_step
from embedbuild.steps.source import unpack_step
from embedbuild.toolchain import Toolchain


@dataclass
class Plan:
    """The steps of one board's build, by role."""

    board: Board
    steps: dict[str, Step]

    @property
    def result(self) -> Step:
        return self.steps["result"]


def plan_board(board: Board) -> Plan:
    """Make the step graph of a board. Reads the board's small files (fragments,
    patches, dts) to key the steps; fails early on conflicting fragments."""
    tc = Toolchain(board.cross_compile, board.arch)
    src = board.kernel_source
    steps: dict[str, Step] = {}
    steps["source"] = unpack_step(f"{board.kernel.source}-src", src)
    steps["tree"] = patched_step(
        f"{board.kernel.source}-patched", steps["source"], board.kernel.patches
    )
    steps["kconfig"] = k.config_step(board, steps["tree"], tc, k.fragments_of(board))
    steps["kernel"] = k.kernel_step(board, steps["tree"], steps["kconfig"], tc, cores())
    parts = {"kernel": steps["kernel"]}
    if board.kernel.dts:
        steps["dtb"] = k.dtb_step(board, steps["tree"], steps["kconfig"], tc)
        parts["dtb"] = steps["dtb"]
    if board.kernel.uimage:
        steps["image"] = k.uimage_step(board, steps["kernel"], steps.get("dtb"))
        parts["image"] = steps["image"]
    steps["result"] = result_step(board, parts)
    return Plan(board, steps)
