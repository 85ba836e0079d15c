"""U-Boot as a buildable component: Debian's source, a defconfig and checked fragments
(the same Kconfig machinery as the kernel), cached in the store."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from embedbuild import bootcmd
from embedbuild.compiler_cache import as_compiled
from embedbuild.model.board import Board
from embedbuild.step import Context, Step
from embedbuild.steps.config import checked_config_step, read_fragments
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain


def uboot_version(src: Path) -> str:
    """VERSION.PATCHLEVEL of a U-Boot tree, as its Kconfig wants it."""
    head = (src / "Makefile").read_text()[:1000]
    v = re.search(r"^VERSION = (\S+)", head, re.M)
    p = re.search(r"^PATCHLEVEL = (\S+)", head, re.M)
    return f"{v.group(1)}.{p.group(1)}" if v and p else "unknown"


def uboot_steps(board: Board, tree: Step, tc: Toolchain, jobs: int) -> tuple[Step, Step]:
    """(config step, build step) of the board's U-Boot; the build's outputs: ``image``
    (the file QEMU or the flash starts) and ``config``; for a board that gives U-Boot its
    own control DTB (``control_dts`` or [signing], see uboot_control.py) also ``nodtb``
    (u-boot-nodtb.bin) and ``dtb`` (the u-boot.dtb U-Boot built, if any)."""
    spec = board.uboot.build
    assert spec is not None
    separate = spec.control_dts is not None or board.signing is not None
    outputs = {"image": spec.image, "config": "u-boot.config"}
    if separate:
        outputs |= {"nodtb": "u-boot-nodtb.bin", "dtb": "u-boot.dtb"}

    def env(src: Path) -> dict[str, str]:
        return {**tc.kconfig_env(src), "UBOOTVERSION": uboot_version(src)}

    fragments = read_fragments(spec.fragments)
    derived = tftp_fragment(board.uboot.tftp_blocksize)
    if board.flash is not None and board.flash.ab is not None:
        # The A/B boot in U-Boot's compiled-in default environment: a damaged saved one
        # (a power cut during saveenv) still boots a slot.
        cmd = bootcmd.ab_default_bootcmd(board).replace("\\", "\\\\").replace('"', '\\"')
        derived += f"# [flash.ab]: the A/B boot script\nCONFIG_BOOTCOMMAND=\"{cmd}\"\n"
    if derived:
        fragments[board.dir / "board.toml"] = derived
    config = checked_config_step(
        kind="uboot-config",
        name=f"{board.name}-uboot-config",
        tree=tree,
        base=spec.defconfig,
        fragments=fragments,
        make=lambda src, b, target, jobs: tc.make(src, b, target, jobs=jobs, kernel=False),
        kconfig_env=env,
        output="u-boot.config",
        inputs={"toolchain": tc.identity()},
    )

    def build(ctx: Context) -> None:
        src = ctx.input("tree", "tree")
        b = ctx.scratch
        shutil.copyfile(ctx.input("config", "config"), b / ".config")
        # With a control DTB of ours, only the files used are made: `all` also runs
        # U-Boot's check that a board with a prior stage (QEMU) takes that stage's DTB
        # (scripts/check-of.sh), which is the very DTB verified boot must not trust.
        targets = [spec.image, "u-boot-nodtb.bin", "u-boot.dtb"] if separate else []
        ctx.run.run(tc.make(src, b, cache_friendly(src, b), *targets, jobs=ctx.jobs,
                            kernel=False),
                    env=REPRODUCIBLE_ENV, what="building U-Boot")
        shutil.copyfile(b / spec.image, ctx.output("image"))
        shutil.copyfile(b / ".config", ctx.output("config"))
        if separate:
            shutil.copyfile(b / "u-boot-nodtb.bin", ctx.output("nodtb"))
            # OF_OMIT_DTB or OF_BOARD builds none; uboot_control.py says what to set.
            if (b / "u-boot.dtb").exists():
                shutil.copyfile(b / "u-boot.dtb", ctx.output("dtb"))
            else:
                ctx.output("dtb").write_bytes(b"")

    return config, Step(
        kind="uboot",
        name=f"{board.name}-uboot",
        version=1,
        inputs={"image": spec.image, "toolchain": tc.identity()},
        deps={"tree": tree, "config": config},
        build=build,
        outputs=outputs,
        jobs=jobs,
        compilers=tc.compilers,
    )


def tftp_fragment(blocksize: int) -> str:
    """The U-Boot options a TFTP block of ``blocksize`` bytes needs (uboot.tftp_blocksize).

    A block larger than one Ethernet frame holds (1468 bytes of data after the IP, UDP
    and TFTP headers) comes in IP fragments. U-Boot reassembles them only with IP_DEFRAG,
    into a buffer of NET_MAXDEFRAG bytes; without it, it quietly asks for 1468-byte
    blocks instead."""
    if blocksize <= 1468:
        return ""
    return ("# [uboot] tftp_blocksize: blocks larger than a frame come in IP fragments\n"
            f"CONFIG_IP_DEFRAG=y\nCONFIG_NET_MAXDEFRAG={max(16384, blocksize + 20 + 8 + 4)}\n")


def cache_friendly(src: Path, build: Path) -> str:
    """A make variable that keeps U-Boot's bytes the same through the compiler cache
    and lets compiles in another build folder hit it.

    U-Boot maps ``$(srctree)/`` away in ``__FILE__`` (-fmacro-prefix-map); through
    ccache the compiler sees the source folder relative to the build folder, which is
    mapped the same way. U-Boot compiles with -g, so ccache hashes the working folder
    (after the debug prefix maps): mapping the build folder to ``.`` makes two build
    folders alike. Debug info is not in u-boot.bin; without ccache, nothing else changes.
    """
    return f"KCPPFLAGS=-fmacro-prefix-map={as_compiled(src, build)}/= -fdebug-prefix-map={build}=."
