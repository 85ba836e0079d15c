"""The board model: everything a board folder says, validated once at load.

Relative paths are resolved against the board folder (passed as validation
context ``{"dir": Path}``) and must exist; references between parts (sources,
overlays, packages) are resolved by the loader, so the rest of the code can
trust the model as it is.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from embedbuild.model.base import Strict
from embedbuild.model.source import Source
from embedbuild.model.system import System


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("dir")
    path = value if value.is_absolute() or base is None else Path(base) / value
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path.resolve()


BoardFile = Annotated[Path, AfterValidator(_resolve)]
Address = Annotated[int, Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]


class Arch(StrEnum):
    """Kernel architectures embedbuild knows how to build for."""

    arm = "arm"
    arm64 = "arm64"
    mips = "mips"


class UImage(Strict):
    """Legacy U-Boot image packaging of the kernel.

    Args:
        compression: how the kernel payload is compressed inside the uImage.
        load: load address.
        entry: entry address, or "elf" to read it from vmlinux with pyelftools.
        append_dtb: put the board's DTB right after the kernel before compressing
            (MIPS_RAW_APPENDED_DTB).
    """

    compression: Literal["none", "gzip", "lzma", "lzo", "lz4", "zstd"] = "lzma"
    load: Address
    entry: Address | Literal["elf"] = "elf"
    append_dtb: bool = False


class Kernel(Strict):
    """How the board's kernel is configured, patched and packaged.

    Args:
        source: name of a source in boards/common/sources.toml or the board's [sources].
        base: the kernel make target the config starts from: allnoconfig (which takes
            the fragments as KCONFIG_ALLCONFIG: what they do not ask for is off) or a
            defconfig (the fragments over it, then olddefconfig).
        fragments: Kconfig fragments, merged in order; a symbol set differently in
            two fragments is an error.
        patches: applied in order with ``patch -p1``.
        image: the kernel make target that produces the image.
        uimage: wrap the image in a legacy uImage.
        dts: a device tree source compiled with the kernel's dtc and include paths.
        dtb: or an in-tree DTB target, e.g. "rockchip/rk3326-odroid-go2.dtb".
        cmdline: kernel command line given by the bootloader.
    """

    source: str
    base: str = "allnoconfig"
    fragments: list[BoardFile] = Field(min_length=1)
    patches: list[BoardFile] = []
    image: Literal["zImage", "Image", "Image.gz", "vmlinux.bin", "vmlinux"]
    uimage: UImage | None = None
    dts: BoardFile | None = None
    dtb: str | None = None
    cmdline: str = ""

    @model_validator(mode="after")
    def _one_dt(self) -> Self:
        if self.dts is not None and self.dtb is not None:
            raise ValueError("give either dts or dtb, not both")
        if self.uimage is not None and self.uimage.append_dtb and self.dts is None and not self.dtb:
            raise ValueError("uimage.append_dtb needs a dts or dtb")
        return self


class UBootBuild(Strict):
    """U-Boot built from source for the board, through the checked Kconfig merge.

    Args:
        source: name of a pinned source (e.g. Debian's u-boot 2023.01).
        defconfig: U-Boot's defconfig target, e.g. malta_defconfig.
        fragments: Kconfig fragments over it, merged in order and verified.
        image: the built file the board's flash or QEMU starts.
    """

    source: str
    defconfig: str
    fragments: list[BoardFile] = []
    image: str = "u-boot.bin"


class UBoot(Strict):
    """What the board's U-Boot looks like and where things go in RAM.

    Args:
        prompt: the U-Boot prompt, e.g. "=> " or "ath> ".
        autoboot: regex of the line that offers to stop autoboot.
        kernel_addr: RAM address the kernel image is loaded to.
        ramdisk_addr: RAM address a separate initramfs is loaded to.
        fdt_addr: address of the device tree the bootloader passes; None when
            the image carries its own.
        tftp_blocksize: tftpblocksize to set (fits a 1500-byte MTU by default).
        tftp_windowsize: tftpwindowsize to set (RFC 7440; U-Boot ignores it when built without).
        build: build U-Boot from source (else the board's own U-Boot is used).
    """

    prompt: str = "=> "
    autoboot: str = "Hit any key to stop autoboot"
    kernel_addr: Address
    ramdisk_addr: Address | None = None
    fdt_addr: Address | None = None
    tftp_blocksize: int = Field(default=1468, ge=512, le=65464)
    tftp_windowsize: int = Field(default=1, ge=1, le=64)
    build: UBootBuild | None = None


class Serial(Strict):
    """The board's serial console.

    Args:
        baud: line speed.
        write_chunk: bytes sent at once (0: whole lines); boards without flow control need small.
        write_delay: seconds between chunks.
    """

    baud: int = 115200
    write_chunk: int = Field(default=0, ge=0)
    write_delay: float = Field(default=0.0, ge=0)


class Qemu(Strict):
    """How QEMU emulates the board (the board has no [qemu] when it cannot be emulated).

    Args:
        system: the qemu-system-* binary.
        machine: -M value.
        cpu: -cpu value.
        memory: -m value.
        firmware: the bootloader QEMU starts (-bios), e.g. Debian's U-Boot for qemu_arm;
            omitted when [uboot.build] makes it.
        nic: the network device model on the tap.
        nodefaults: pass -nodefaults (no default devices).
        extra: more QEMU arguments.
    """

    system: str
    machine: str
    cpu: str | None = None
    memory: str = "256M"
    firmware: Path | None = None
    nic: str = "virtio-net-device"
    nodefaults: bool = False
    extra: list[str] = []


class Userland(Strict):
    """The board's userland build.

    Args:
        busybox: Kconfig fragments for busybox (over its defconfig), merged in order.
    """

    busybox: list[BoardFile] = Field(min_length=1)


class Partition(Strict):
    """A flash partition.

    Args:
        name: its name (as in the device tree's partitions).
        offset: start in bytes from the start of the flash.
        size: length in bytes.
        read_only: never written by embedbuild (bootloader, calibration data).
    """

    name: str
    offset: Address
    size: int = Field(gt=0)
    read_only: bool = False


class Flash(Strict):
    """The board's flash and how it is partitioned.

    Args:
        size: flash size in bytes.
        firmware: the partition the firmware image is written to.
        dt_label: label of the flash node in the board's .dts; embedbuild generates
            its partitions from this table (embedbuild-flash.dtsi).
        partitions: in address order, not overlapping.
    """

    size: int = Field(gt=0)
    firmware: str
    dt_label: str = Field(default="flash", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    partitions: list[Partition] = Field(min_length=1)

    @model_validator(mode="after")
    def _layout(self) -> Self:
        end = 0
        names = set()
        for p in self.partitions:
            if p.name in names:
                raise ValueError(f"partition {p.name!r} is listed twice")
            names.add(p.name)
            if p.offset < end:
                raise ValueError(f"partition {p.name!r} at 0x{p.offset:x} overlaps the one "
                                 f"before it (which ends at 0x{end:x})")
            end = p.offset + p.size
            if end > self.size:
                raise ValueError(f"partition {p.name!r} ends at 0x{end:x}, past the end of "
                                 f"the flash (0x{self.size:x})")
        fw = next((p for p in self.partitions if p.name == self.firmware), None)
        if fw is None:
            raise ValueError(f"firmware partition {self.firmware!r} is not in the layout")
        if fw.read_only:
            raise ValueError(f"firmware partition {self.firmware!r} is marked read_only")
        return self

    def partition(self, name: str) -> Partition:
        """The partition called name."""
        return next(p for p in self.partitions if p.name == name)


class Board(Strict):
    """A board folder, validated. ``name`` and ``dir`` come from the folder."""

    name: str
    dir: Path
    description: str = Field(min_length=1)
    arch: Arch
    cross_compile: str = Field(pattern=r"^[A-Za-z0-9_.-]+-$")
    sources: dict[str, Source] = {}
    kernel: Kernel
    uboot: UBoot
    serial: Serial = Serial()
    qemu: Qemu | None = None
    userland: Userland | None = None
    system: System | None = None
    flash: Flash | None = None

    @model_validator(mode="after")
    def _qemu_firmware(self) -> Self:
        if self.qemu and self.qemu.firmware is None and self.uboot.build is None:
            raise ValueError("[qemu] needs a firmware (a U-Boot binary), or [uboot.build] "
                             "to build one")
        return self

    def firmware_partition(self) -> Partition | None:
        """Where the firmware image goes, when the board has flash."""
        return self.flash.partition(self.flash.firmware) if self.flash else None

    @property
    def kernel_source(self) -> Source:
        """The pinned source the kernel is built from."""
        return self.sources[self.kernel.source]
