"""The TFTP boot bundle: what U-Boot loads over the network beside the kernel (a
separate initramfs), the bootloader embedbuild built, and the commands that boot it."""

from __future__ import annotations

from pathlib import Path

from embedbuild import bootcmd
from embedbuild.outputs import Pick, Published, output


@output("tftpboot", applies=lambda board: True)
def plan(p) -> Published:
    """The initramfs (when loaded separately), the built U-Boot, the TFTP boot commands
    (which load the DTB too, unless the uImage carries it)."""
    board = p.board
    pub = Published()
    initrd = None
    if board.system is not None and board.system.initramfs == "separate":
        step = p.get("initramfs")
        pub.files.append(Pick("initramfs", step, "image"))
        pub.checks.append(p.get("initramfs-check"))
        initrd = Path(step.output_path("image")).name
    if board.uboot.build:
        pub.files.append(Pick("bootloader", p.get("uboot"), "image"))
    image, name = p.boot_image()
    kernel_file = Path(image.output_path(name)).name
    # A DTB that does not ride inside the uImage is loaded beside the kernel.
    dtb = None
    if p.has_dtb and not (board.kernel.uimage and board.kernel.uimage.append_dtb):
        dtb = Path(p.get("dtb").output_path("dtb")).name
    pub.manifest["tftpboot"] = bootcmd.tftp_boot(board, kernel_file, initrd, dtb)
    return pub
