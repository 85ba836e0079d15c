"""U-Boot as a buildable component: Debian's source, a defconfig and checked fragments
(the same Kconfig machinery as the kernel), cached in the store."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from embedbuild.model.board import Board
from embedbuild.plan import Context, Step
from embedbuild.steps.config import checked_config_step
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain


def _make(tc: Toolchain, src: Path, b: Path, *targets: str, jobs: int = 1) -> list[str]:
    return ["make", "-C", str(src), f"O={b}", f"CROSS_COMPILE={tc.prefix}", f"-j{jobs}", "-s",
            *targets]


def uboot_version(src: Path) -> str:
    """VERSION.PATCHLEVEL of a U-Boot tree, as its Kconfig wants it."""
    head = (src / "Makefile").read_text()[:1000]
    v = re.search(r"^VERSION = (\S+)", head, re.M)
    p = re.search(r"^PATCHLEVEL = (\S+)", head, re.M)
    return f"{v.group(1)}.{p.group(1)}" if v and p else "unknown"


def uboot_steps(board: Board, tree: Step, tc: Toolchain, jobs: int) -> tuple[Step, Step]:
    """(config step, build step) of the board's U-Boot."""
    spec = board.uboot.build
    assert spec is not None

    def env(src: Path) -> dict[str, str]:
        return {**tc.kconfig_env(src), "UBOOTVERSION": uboot_version(src)}

    config = checked_config_step(
        kind="uboot-config",
        name=f"{board.name}-uboot-config",
        tree=tree,
        base=spec.defconfig,
        fragments={p: p.read_text() for p in spec.fragments},
        make=lambda src, b, target, jobs: _make(tc, src, b, target, jobs=jobs),
        kconfig_env=env,
        output="u-boot.config",
        inputs={"toolchain": tc.identity()},
    )

    def build(ctx: Context) -> None:
        src = ctx.deps["tree"]
        b = ctx.scratch
        shutil.copyfile(ctx.deps["config"] / "u-boot.config", b / ".config")
        ctx.run.run(_make(tc, src, b, jobs=ctx.jobs), env=REPRODUCIBLE_ENV, what="building U-Boot")
        shutil.copyfile(b / spec.image, ctx.out / spec.image)
        shutil.copyfile(b / ".config", ctx.out / "u-boot.config")

    return config, Step(
        kind="uboot",
        name=f"{board.name}-uboot",
        version=1,
        inputs={"image": spec.image, "toolchain": tc.identity()},
        deps={"tree": tree, "config": config},
        build=build,
        jobs=jobs,
    )
