"""busybox, cross-built from its source with a checked config.

The config goes through the same Kconfig machinery as the kernel: defconfig,
fragments merged and checked with kconfiglib, busybox's own oldconfig, every
requested value verified. The output is the installed tree (bin/busybox and
its applet links) plus the final config.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from embedbuild import kconfig
from embedbuild.plan import Context, Step
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain

# No build date in the banner: the same inputs give the same binary.
BUSYBOX_ENV = {**REPRODUCIBLE_ENV, "KCONFIG_NOTIMESTAMP": "1"}


def busybox_step(tree: Step, tc: Toolchain, fragments: dict[Path, str], name: str,
                 jobs: int) -> Step:
    """Configure, check, build and install busybox into ``root/``."""
    requests = kconfig.merge_fragments(fragments)

    def build(ctx: Context) -> None:
        b = ctx.scratch
        ctx.run.run(["cp", "-a", f"{ctx.deps['tree']}/.", b], what="copying the busybox source")
        # Store items are read-only, and cp -a keeps that; this copy is ours to build in.
        ctx.run.run(["chmod", "-R", "u+w", b], what="making the copy writable")
        mk = ["make", "-C", str(b), f"CROSS_COMPILE={tc.prefix}", "-s"]
        ctx.run.run([*mk, "defconfig"], env=BUSYBOX_ENV, what="busybox defconfig")
        kconf = kconfig.open_kconfig(b, {}, top="Config.in")
        kconfig.check_known(kconf, requests)
        kconfig.apply_requests(kconf, b / ".config", requests, b / ".config")
        ctx.run.run([*mk, "oldconfig"], env=BUSYBOX_ENV, stdin=b"", what="busybox oldconfig")
        kconfig.verify(kconf, b / ".config", requests)
        ctx.run.run([*mk, f"-j{ctx.jobs}", "busybox"], env=BUSYBOX_ENV, what="building busybox")
        ctx.run.run([*mk, f"CONFIG_PREFIX={ctx.out / 'root'}", "install"], env=BUSYBOX_ENV,
                    what="installing busybox")
        shutil.copyfile(b / ".config", ctx.out / "busybox.config")

    return Step(
        kind="busybox",
        name=name,
        version=1,
        inputs={
            "fragments": kconfig.fragments_digest(fragments),
            "toolchain": tc.identity(),
        },
        deps={"tree": tree},
        build=build,
        jobs=jobs,
    )
