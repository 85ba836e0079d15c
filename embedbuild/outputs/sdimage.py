"""The SD-card image: partition table, FAT boot partition with the kernel, the DTB, the
initramfs and extlinux/extlinux.conf (what U-Boot's distro boot reads), and the board's
raw bootloader blobs; for boards with an [sdcard] table. Its manifest section is the
image's layout as read back."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from embedbuild.output import Fact, Pick, PlanContext, Published, SizeLine, output
from embedbuild.step import Step


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SdFile(_Model):
    """A file in the SD card's boot partition, as read back from the image."""

    size: int
    sha256: str


class SdPartition(_Model):
    """A partition of the SD-card image, as read back from its table and file system."""

    number: int
    bootable: bool
    type: int
    start: int
    size: int
    filesystem: str
    label: str
    serial: str
    files: dict[str, SdFile]


class SdRaw(_Model):
    """A raw blob of the SD-card image: where it is, and what was written there (file,
    sha256, length), or None when the board's env variable was not set."""

    name: str
    offset: int
    size: int
    file: str | None
    sha256: str | None
    length: int | None
    env: str | None


class SdCardInfo(_Model):
    """The SD-card image: its table, partitions and raw blobs, and the extlinux.conf."""

    image: str
    size: int
    table: str
    disk_id: str
    partitions: list[SdPartition]
    raw: list[SdRaw]
    extlinux: str




def size(m) -> list[SizeLine]:
    sd = m.sdcard
    lines = [SizeLine(f"SD-card image ({sd.image})", stored=sd.size)]
    for p in sd.partitions:
        lines.append(SizeLine(f"  partition {p.number} ({p.filesystem}, {p.size:,} bytes): "
                              f"{len(p.files)} files, "
                              f"{sum(f.size for f in p.files.values()):,} bytes"))
    for r in sd.raw:
        what = (f"{r.length:,} of {r.size:,} bytes" if r.file
                else f"not written (${r.env} unset)")
        lines.append(SizeLine(f"  raw {r.name} at 0x{r.offset:x}: {what}"))
    return lines


@output("sdimage", applies=lambda board: board.sdcard is not None,
        sections={"sdcard": SdCardInfo}, size=size)
def plan(p: PlanContext) -> Published:
    """BOARD-sd.img: an image to write to an SD card (embedbuild write-sd), read back."""
    step = p.add("sdimage", lambda: _sdimage(p))
    pub = Published(files=[Pick("sdcard", step, "image"), Pick("extlinux", step, "extlinux")],
                    facts={"sdcard": Fact(step, "layout")})
    if p.board.system is not None and p.board.system.initramfs == "separate":
        pub.checks.append(p.get("initramfs-check"))
    return pub


def _sdimage(p: PlanContext) -> Step:
    """The image of the file U-Boot boots, the DTB and the separate initramfs (by their
    names in the result) and the extlinux.conf that names them."""
    from embedbuild.bootcmd import extlinux_conf
    from embedbuild.steps.sdimage import sdimage_step

    files: dict[str, tuple[Step, str]] = {}

    def add(step: Step, out: str) -> str:
        name = Path(step.output_path(out)).name
        files[name] = (step, out)
        return name

    kernel = add(*p.boot_image())
    fdt = add(p.get("dtb"), "dtb") if p.has_dtb else None
    initrd = None
    if p.board.system is not None and p.board.system.initramfs == "separate":
        initrd = add(p.get("initramfs"), "image")
    return sdimage_step(p.board, files, extlinux_conf(p.board, kernel, fdt, initrd))
