"""manifest.json: what a build result holds and how U-Boot boots it.

Written by the result step, read by `size`, the bench (rig/) and the tests:
the one description of a result that everything after the build trusts.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from embedbuild.errors import EmbedbuildError

FILENAME = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileInfo(_Model):
    """One file of the result: what it is for, its size and sha256."""

    role: str
    size: int
    sha256: str


class KernelInfo(_Model):
    """The bootable kernel file; for a uImage, the addresses read back from its header."""

    file: str
    cmdline: str
    load: str | None = None
    entry: str | None = None
    compression: str | None = None


class UBootInfo(_Model):
    """Where U-Boot loads things and the commands that TFTP-boot the result."""

    prompt: str
    kernel_addr: str
    ramdisk_addr: str | None
    fdt_addr: str | None
    tftpboot: list[str]


class ComponentSize(_Model):
    """Bytes of one initramfs component, before and after compression."""

    component: str
    raw: int
    compressed: int


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


class Manifest(_Model):
    """A build result's manifest.json."""

    board: str
    arch: str
    description: str
    outputs: list[str]
    files: dict[str, FileInfo]
    kernel: KernelInfo
    uboot: UBootInfo
    initramfs: list[ComponentSize] = []
    # The one file written to the firmware partition (a FIT or the uImage), if any.
    flash_image: str | None = None
    # The SD-card image, for boards with [sdcard].
    sdcard: SdCardInfo | None = None

    @classmethod
    def read(cls, result: Path) -> Manifest:
        """The manifest of a result folder."""
        path = result / FILENAME
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as e:
            raise EmbedbuildError(f"not a readable build result: {e}", where=str(path),
                                  hint="build the board again (embedbuild build BOARD)") from None

    def write(self, result: Path) -> None:
        """Write manifest.json into a result folder."""
        (result / FILENAME).write_text(self.model_dump_json(indent=2) + "\n")

    def with_role(self, role: str) -> list[str]:
        """Names of the files with this role."""
        return [name for name, f in self.files.items() if f.role == role]
