"""The kernel: its image (unless a packaged image boots instead), vmlinux, the final
config and the board's DTB, checked against the drivers the kernel has. Its manifest
section names the file U-Boot boots and the command line."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from embedbuild.output import Pick, PlanContext, Published, SizeLine, output


class KernelInfo(BaseModel):
    """The bootable kernel file; for a uImage, the addresses read back from its header
    (the uimage output adds them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    cmdline: str
    load: str | None = None
    entry: str | None = None
    compression: str | None = None


def size(m) -> list[SizeLine]:
    kbytes = m.files[m.kernel.file].size
    return [SizeLine(f"kernel ({m.kernel.file})", stored=kbytes, loaded=kbytes)]


@output("kernel", applies=lambda board: True, sections={"kernel": KernelInfo}, size=size)
def plan(p: PlanContext) -> Published:
    """The kernel image, vmlinux, kernel.config and the DTB."""
    kernel = p.get("kernel")
    image, name = p.boot_image()
    pub = Published(manifest={"kernel": {"file": Path(image.output_path(name)).name,
                                         "cmdline": p.board.kernel.cmdline}})
    if not p.board.kernel.uimage:
        pub.files.append(Pick("kernel", kernel, "image"))
    if p.board.kernel.image != "vmlinux":
        pub.files.append(Pick("vmlinux", kernel, "vmlinux"))
    pub.files.append(Pick("config", kernel, "config"))
    if p.has_dtb:
        pub.files.append(Pick("dtb", p.get("dtb"), "dtb"))
        pub.checks.append(p.get("dtb-check"))
    return pub
