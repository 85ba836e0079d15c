"""The kernel build: make <image> out of tree, with the initramfs built in when the
system asks for it. Device trees are the board's own step (steps/dtb.py), so boards
that share one kernel share this step's store item."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from embedbuild import kconfig
from embedbuild.compiler_cache import as_compiled
from embedbuild.errors import StepError
from embedbuild.model.board import Board
from embedbuild.step import Context, Step
from embedbuild.toolchain import REPRODUCIBLE_ENV, Toolchain

BOOT_DIR = {"arm": "arch/arm/boot", "arm64": "arch/arm64/boot", "mips": "arch/mips/boot"}


def kernel_step(board: Board, tree: Step, config: Step, tc: Toolchain, jobs: int,
                initramfs: Step | None = None) -> Step:
    """The kernel: outputs ``image``, ``vmlinux``, ``system-map`` and ``config`` (the
    final .config).

    With ``initramfs``, its uncompressed cpio is built into the kernel
    (CONFIG_INITRAMFS_SOURCE), so one file is loaded and flashed.
    """
    image = board.kernel.image
    outputs = {"image": image, "vmlinux": "vmlinux", "system-map": "System.map",
               "config": "kernel.config"}

    def build(ctx: Context) -> None:
        src = ctx.input("tree", "tree")
        b = ctx.scratch
        shutil.copyfile(ctx.input("config", "config"), b / ".config")
        if initramfs is not None:
            _build_in(ctx, tc, src, b)
        ctx.run.run(tc.make(src, b, path_independent(src, b), image, jobs=ctx.jobs),
                    env=REPRODUCIBLE_ENV, what=f"make {image}")
        boot = b / BOOT_DIR[board.arch.value]
        shutil.copyfile(b / image if image == "vmlinux" else boot / image, ctx.output("image"))
        if image != "vmlinux":
            shutil.copyfile(b / "vmlinux", ctx.output("vmlinux"))
        shutil.copyfile(b / "System.map", ctx.output("system-map"))
        # The build folder's path is not part of what was built: keep it out of the output.
        ctx.output("config").write_text((b / ".config").read_text().replace(str(b) + "/", ""))

    return Step(
        kind="kernel",
        name=f"{board.name}-kernel",
        version=3,
        inputs={"image": image, "arch": board.arch.value,
                "toolchain": tc.identity()},
        deps={"tree": tree, "config": config} | ({"initramfs": initramfs} if initramfs else {}),
        build=build,
        outputs=outputs,
        jobs=jobs,
        compilers=tc.compilers,
        count=object_files,
    )


def object_files(build: Path) -> int:
    """Object files in a kernel build folder so far: the compile's progress, against
    the count of the board's last build."""
    n = 0
    stack = [build]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.name.endswith(".o"):
                    n += 1
    return n


def path_independent(src: Path, build: Path) -> str:
    """A make variable that keeps the source and build folders out of the kernel's bytes.

    Some objects carry debug info whatever the config says (the MIPS vDSO is built
    with -g): its DW_AT_name and DW_AT_comp_dir hold these folders, which differ per
    store (and the build folder per process), and the vDSO's and vmlinux's GNU build
    IDs hash them. KCPPFLAGS is the one user flag variable that reaches every C and
    assembler compile, the vDSO's included (KCFLAGS and KAFLAGS are filtered out
    there); gcc passes the map on to the assembler as --debug-prefix-map.

    Through the compiler cache the compiler sees the source folder relative to the
    build folder (ccache's base_dir): that form is mapped alike, so the bytes are the
    same with and without ccache. Without ccache no path has that form.
    """
    return (f"KCPPFLAGS=-ffile-prefix-map={src}=. -ffile-prefix-map={build}=. "
            f"-ffile-prefix-map={as_compiled(src, build)}=.")


def _build_in(ctx: Context, tc: Toolchain, src: Path, b: Path) -> None:
    """Point the config at the initramfs's uncompressed cpio (the kernel image's own
    compression covers it) and check the kernel takes it."""
    cpio = b / "initramfs.cpio"
    shutil.copyfile(ctx.input("initramfs", "image"), cpio)
    with open(b / ".config", "a") as f:
        f.write(f'CONFIG_INITRAMFS_SOURCE="{cpio}"\nCONFIG_INITRAMFS_COMPRESSION_NONE=y\n')
    ctx.run.run(tc.make(src, b, "olddefconfig"), env=REPRODUCIBLE_ENV, what="make olddefconfig")
    final = kconfig.read_config(b / ".config")
    if final.get("INITRAMFS_COMPRESSION_NONE") != "y" or not final.get("INITRAMFS_SOURCE"):
        raise StepError("the kernel config does not take a built-in initramfs",
                        hint="CONFIG_BLK_DEV_INITRD=y is needed in a fragment")
