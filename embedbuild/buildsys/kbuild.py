"""kbuild-style packages (busybox): a checked config from a defconfig and the board's
fragments, then an out-of-tree make and ``make install CONFIG_PREFIX=``.

The config goes through the same checked Kconfig step as the kernel: defconfig,
fragments merged and checked with kconfiglib, the package's own oldconfig, every
requested value verified. The build's outputs: ``root`` (the installed tree) and
``config`` (the final config).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from embedbuild.buildsys.common import (
    check_binaries,
    check_declared,
    identity_of,
    library_deps,
    links_libc,
    stage_sysroot,
)
from embedbuild.buildsys.libc import libc_cc
from embedbuild.recipe import PackageSteps, Recipe, Target
from embedbuild.step import Context, Step
from embedbuild.steps.config import checked_config_step, read_fragments
from embedbuild.toolchain import REPRODUCIBLE_ENV


class KbuildRecipe(Recipe):
    """A package configured with Kconfig and built with kbuild.

    Class attributes:
        config_base: the make target the config starts from.
        config_top: the tree's top Kconfig file.
        config_settle: the make target that fills in what the fragments left open.
        config_generated: the base make generates the Kconfig files below the top one.
        make_env: the environment of every make (reproducibility knobs).
        make_target: what ``make`` builds before ``make install``.
    """

    config_base: ClassVar[str] = "defconfig"
    config_top: ClassVar[str] = "Kconfig"
    config_settle: ClassVar[str] = "olddefconfig"
    config_generated: ClassVar[bool] = False
    make_env: ClassVar[Mapping[str, str]] = REPRODUCIBLE_ENV
    make_target: ClassVar[str] = "all"

    def fragments(self, target: Target) -> list[Path]:
        """The board's fragments for this package: [userland] NAME."""
        return list(getattr(target.board.userland, self.name, None) or [])

    def plan(self, target: Target) -> PackageSteps:
        assert not self.depends, "kbuild packages link no library recipes but the libc"
        tc, env = target.toolchain, dict(self.make_env)
        libs = library_deps(self, target)
        tree = target.source(self.source)
        libc = links_libc(self, target)  # built against the board's libc recipe
        config = checked_config_step(
            kind=f"{self.name}-config",
            name=f"{self.name}-{tc.triplet}-config",
            tree=tree,
            base=self.config_base,
            fragments=read_fragments(self.fragments(target)),
            make=lambda src, b, goal, jobs: tc.make(src, b, goal, jobs=jobs, kernel=False),
            kconfig_env=lambda src: {},
            output=f"{self.name}.config",
            inputs={"toolchain": tc.identity()},
            top=self.config_top,
            settle=self.config_settle,
            env=env,
            generated=self.config_generated,
        )

        def build(ctx: Context) -> None:
            src = ctx.input("tree", "tree")
            b = ctx.scratch
            sysroot = stage_sysroot(ctx)
            # kbuild's CC is $(CROSS_COMPILE)gcc; against a libc recipe, its command.
            cc = [f"CC={libc_cc(tc, sysroot)}"] if sysroot and libc else []
            shutil.copyfile(ctx.input("config", "config"), b / ".config")
            ctx.run.run(tc.make(src, b, *cc, self.make_target, jobs=ctx.jobs, kernel=False),
                        env=env, what=f"building {self.name}")
            root = ctx.output("root")
            ctx.run.run(tc.make(src, b, *cc, f"CONFIG_PREFIX={root}", "install", kernel=False),
                        env=env, what=f"installing {self.name}")
            check_declared(root, self.installs, self.name)
            check_binaries(root, identity_of(tc), self.name,
                           libc=libc)
            shutil.copyfile(b / ".config", ctx.output("config"))

        return PackageSteps(Step(
            kind=self.name,
            name=f"{self.name}-{tc.triplet}",
            version=self.step_version,
            inputs={"toolchain": tc.identity(), **self.key_inputs(target)},
            deps={"tree": tree, "config": config, **libs},
            build=build,
            outputs={"root": "root", "config": f"{self.name}.config"},
            jobs=target.jobs,
            compilers=tc.compilers,
        ), {"config": config})
