"""busybox, cross-built out of tree from its source with a checked config.

The config goes through the same checked Kconfig step as the kernel: defconfig,
fragments merged and checked with kconfiglib, busybox's own oldconfig, every
requested value verified. The build's output is the installed tree (bin/busybox
and its applet links) plus the final config.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from embedbuild.step import Context, Step
from embedbuild.steps.config import checked_config_step, read_fragments
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain

# No build date in the banner: the same inputs give the same binary.
BUSYBOX_ENV = {**REPRODUCIBLE_ENV, "KCONFIG_NOTIMESTAMP": "1"}


def busybox_steps(tree: Step, tc: Toolchain, fragments: list[Path], jobs: int
                  ) -> tuple[Step, Step]:
    """(config step, build step); the build's outputs: ``root`` (the installed tree)
    and ``config``."""
    config = checked_config_step(
        kind="busybox-config",
        name=f"busybox-{tc.triplet}-config",
        tree=tree,
        base="defconfig",
        fragments=read_fragments(fragments),
        make=lambda src, b, target, jobs: tc.make(src, b, target, jobs=jobs, kernel=False),
        kconfig_env=lambda src: {},
        output="busybox.config",
        inputs={"toolchain": tc.identity()},
        top="Config.in",
        settle="oldconfig",
        env=BUSYBOX_ENV,
        generated=True,
    )

    def build(ctx: Context) -> None:
        src = ctx.input("tree", "tree")
        b = ctx.scratch
        shutil.copyfile(ctx.input("config", "config"), b / ".config")
        ctx.run.run(tc.make(src, b, "busybox", jobs=ctx.jobs, kernel=False), env=BUSYBOX_ENV,
                    what="building busybox")
        ctx.run.run(tc.make(src, b, f"CONFIG_PREFIX={ctx.output('root')}", "install",
                            kernel=False), env=BUSYBOX_ENV, what="installing busybox")
        shutil.copyfile(b / ".config", ctx.output("config"))

    return config, Step(
        kind="busybox",
        name=f"busybox-{tc.triplet}",
        version=2,
        inputs={"toolchain": tc.identity()},
        deps={"tree": tree, "config": config},
        build=build,
        outputs={"root": "root", "config": "busybox.config"},
        jobs=jobs,
        compilers=tc.compilers,
    )
