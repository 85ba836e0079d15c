"""The kernel's .config: the board's base target and fragments through the checked
Kconfig step."""

from __future__ import annotations

from embedbuild.model.board import Board
from embedbuild.step import Step
from embedbuild.steps.config import checked_config_step, read_fragments
from embedbuild.toolchain import Toolchain


def kernel_config_step(board: Board, tree: Step, tc: Toolchain) -> Step:
    """The kernel .config (output ``config``): the base target with the merged
    fragments (for allnoconfig, exactly what the kernel's ``merge_config.sh -n``
    gives), then verified."""
    return checked_config_step(
        kind="kconfig",
        name=f"{board.name}-kconfig",
        tree=tree,
        base=board.kernel.base,
        fragments=read_fragments(board.kernel.fragments),
        make=lambda src, b, target, jobs: tc.make(src, b, target, jobs=jobs),
        kconfig_env=tc.kconfig_env,
        output="kernel.config",
        inputs={"arch": board.arch.value, "toolchain": tc.identity()},
    )
