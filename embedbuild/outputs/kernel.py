"""The kernel: its image (unless a packaged image boots instead), vmlinux, the final
config and the board's DTB, checked against the drivers the kernel has. Its manifest
section names the file U-Boot boots and the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from embedbuild.output import Fact, Pick, PlanContext, Published, SizeLine, output


class KernelInfo(BaseModel):
    """The bootable kernel file; for a uImage, the addresses read back from its header
    (the uimage output adds them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    cmdline: str
    load: str | None = None
    entry: str | None = None
    compression: str | None = None


class ImagePart(BaseModel):
    """Bytes of one part of the boot file: a source folder of the kernel, a component
    of a built-in initramfs, the appended DTB, the uImage header (steps/kernel_parts.py).

    Args:
        group: "kernel", "initramfs" (built in) or "image".
        part: the folder or component.
        raw: its bytes uncompressed.
        image: its estimated share of the boot file; None where the file is not one
            embedbuild compresses.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: Literal["kernel", "initramfs", "image"]
    part: str
    raw: int
    image: int | None


def size(m) -> list[SizeLine]:
    kbytes = m.files[m.kernel.file].size
    lines = [SizeLine(f"kernel ({m.kernel.file})", stored=kbytes, loaded=kbytes)]
    parts = m.kernel_parts
    if parts is None:
        return lines
    if not parts:
        return [*lines, SizeLine("  (no vmlinux.map: CONFIG_VMLINUX_MAP=y splits the kernel "
                                 "by folder)")]
    kernel = [p for p in parts if p.group == "kernel"]
    lines.append(SizeLine("  code and data by source folder", sum(p.raw for p in kernel),
                          _sum(kernel)))
    lines += [SizeLine(f"    {p.part}", p.raw, p.image) for p in kernel]
    builtin = [p for p in parts if p.group == "initramfs"]
    if builtin:
        lines.append(SizeLine("  initramfs (built in)", sum(p.raw for p in builtin),
                              _sum(builtin)))
        lines += [SizeLine(f"    {p.part}", p.raw, p.image) for p in builtin]
    lines += [SizeLine(f"  {p.part}", p.raw, p.image) for p in parts if p.group == "image"]
    return lines


def _sum(parts: list[ImagePart]) -> int | None:
    return None if any(p.image is None for p in parts) else sum(p.image or 0 for p in parts)


@output("kernel", applies=lambda board: True,
        sections={"kernel": KernelInfo, "kernel_parts": list[ImagePart]}, size=size)
def plan(p: PlanContext) -> Published:
    """The kernel image, vmlinux, kernel.config and the DTB; its bytes by part."""
    kernel = p.get("kernel")
    image, name = p.boot_image()
    pub = Published(manifest={"kernel": {"file": Path(image.output_path(name)).name,
                                         "cmdline": p.board.kernel.cmdline}},
                    facts={"kernel_parts": Fact(p.get("kernel-parts"), "parts")})
    if not p.board.kernel.uimage:
        pub.files.append(Pick("kernel", kernel, "image"))
    if p.board.kernel.image != "vmlinux":
        pub.files.append(Pick("vmlinux", kernel, "vmlinux"))
    pub.files.append(Pick("config", kernel, "config"))
    if p.has_dtb:
        pub.files.append(Pick("dtb", p.get("dtb"), "dtb"))
        pub.checks.append(p.get("dtb-check"))
    return pub
