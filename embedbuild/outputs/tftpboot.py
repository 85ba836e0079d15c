"""The TFTP boot bundle: what U-Boot loads over the network beside the kernel (a
separate initramfs), the bootloader embedbuild built, and the commands that boot it,
with where U-Boot loads things (the manifest's ``uboot`` section). A board with
[signing] boots its signed FIT instead (outputs/fit.py), through its configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from embedbuild import bootcmd
from embedbuild.output import Pick, PlanContext, Published, output


class UBootInfo(BaseModel):
    """Where U-Boot loads things and the commands that TFTP-boot the result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    kernel_addr: str
    ramdisk_addr: str | None
    fdt_addr: str | None
    tftpboot: list[str]


def _addr(a: int | None) -> str | None:
    return f"0x{a:08x}" if a is not None else None


@output("tftpboot", applies=lambda board: True, sections={"uboot": UBootInfo})
def plan(p: PlanContext) -> Published:
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
    u = board.uboot
    if board.signing is not None:
        # Verified boot: the signed FIT alone, booted through its configuration.
        from embedbuild.outputs.fit import fit_image

        fit = Path(fit_image(p).output_path("image")).name
        commands = bootcmd.signed_fit_boot(board, fit)
    else:
        commands = bootcmd.tftp_boot(board, kernel_file, initrd, dtb)
    pub.manifest["uboot"] = {
        "prompt": u.prompt, "kernel_addr": _addr(u.kernel_addr) or "",
        "ramdisk_addr": _addr(u.ramdisk_addr), "fdt_addr": _addr(u.fdt_addr),
        "tftpboot": commands}
    return pub
