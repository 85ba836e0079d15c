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


class Fit(Strict):
    """A FIT image (mkimage -f): the kernel and the separate initramfs in one file, each
    with a hash U-Boot checks before booting; what a board that boots from flash writes
    to its firmware partition.

    Args:
        load: where U-Boot copies the kernel before starting it (default
            uboot.kernel_addr).
        entry: the kernel's entry address (default: load).
        ramdisk_load: where U-Boot copies the initramfs (default uboot.ramdisk_addr).
        hash: the hash algorithm of each image node.
    """

    load: Address | None = None
    entry: Address | None = None
    ramdisk_load: Address | None = None
    hash: Literal["sha256", "sha1", "crc32"] = "sha256"


class Kernel(Strict):
    """How the board's kernel is configured, patched and packaged.

    Args:
        source: name of a source in boards/common/sources.toml or the board's [sources].
        base: the kernel make target the config starts from (allnoconfig or a defconfig).
        fragments: Kconfig fragments, merged in order; a symbol set differently in
            two fragments is an error.
        patches: applied in order with ``patch -p1``.
        image: the kernel make target that produces the image.
        uimage: wrap the image in a legacy uImage.
        fit: also package the image and the separate initramfs as a FIT image.
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
    fit: Fit | None = None
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
        pflash_unit: emulate the board's [flash] as this -drive if=pflash unit, backed by a
            file of exactly flash.size bytes that persists across power cycles.
        extra: more QEMU arguments.
    """

    system: str
    machine: str
    cpu: str | None = None
    memory: str = "256M"
    firmware: Path | None = None
    nic: str = "virtio-net-device"
    nodefaults: bool = False
    pflash_unit: int | None = Field(default=None, ge=0)
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
        offset: start in bytes from the start of the flash; a multiple of the erase block.
        size: length in bytes; a multiple of the erase block.
        read_only: never written by embedbuild (bootloader, its environment, calibration
            data).
        saveenv: this partition holds U-Boot's environment and U-Boot's own ``saveenv``
            may rewrite it; only then does ``flash --set-bootcmd`` store a bootcmd.
    """

    name: str
    offset: Address
    size: int = Field(gt=0)
    read_only: bool = False
    saveenv: bool = False

    @property
    def end(self) -> int:
        """The first byte after the partition."""
        return self.offset + self.size


class Flash(Strict):
    """The board's flash, how it is partitioned, and how its U-Boot writes it.

    Args:
        size: flash size in bytes.
        erase_block: the flash's erase block in bytes (what one erase clears, whatever
            the bootloader calls a sector); every partition is aligned to it.
        mapped: the address where the flash appears in the CPU's memory map (NOR and
            memory-mapped SPI NOR), or omitted when it is not mapped.
        dialect: the command set of the board's U-Boot: "nor" (memory-mapped flash through
            U-Boot's flash commands: protect, erase START +LEN, cp.b, cmp.b, crc32) or
            "sf" (SPI NOR through ``sf probe/erase/write/read``). NAND and UBI come later.
        sf_probe: arguments of ``sf probe`` (dialect "sf"), e.g. "0:0".
        readback_addr: RAM address the "sf" dialect reads the flash back to; it must not
            overlap the image loaded at uboot.kernel_addr.
        firmware: the partition the firmware image is written to.
        dt_label: label of the flash node in the board's .dts; embedbuild generates
            its partitions from this table (embedbuild-flash.dtsi).
        partitions: in address order, not overlapping.
    """

    size: int = Field(gt=0)
    erase_block: int = Field(gt=0)
    mapped: Address | None = None
    dialect: Literal["nor", "sf"]
    sf_probe: str = "0"
    readback_addr: Address | None = None
    firmware: str
    dt_label: str = Field(default="flash", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    partitions: list[Partition] = Field(min_length=1)

    @model_validator(mode="after")
    def _layout(self) -> Self:
        if self.erase_block & (self.erase_block - 1):
            raise ValueError(f"erase_block 0x{self.erase_block:x} is not a power of two")
        if self.size % self.erase_block:
            raise ValueError(f"flash size 0x{self.size:x} is not a multiple of erase_block "
                             f"0x{self.erase_block:x}")
        if self.dialect == "nor" and self.mapped is None:
            raise ValueError('dialect "nor" writes through the memory map: give mapped')
        if self.dialect == "sf" and self.readback_addr is None:
            raise ValueError('dialect "sf" reads the flash back into RAM: give readback_addr')
        end = 0
        names = set()
        for p in self.partitions:
            if p.name in names:
                raise ValueError(f"partition {p.name!r} is listed twice")
            names.add(p.name)
            if p.offset < end:
                raise ValueError(f"partition {p.name!r} at 0x{p.offset:x} overlaps the one "
                                 f"before it (which ends at 0x{end:x})")
            for what, value in (("offset", p.offset), ("size", p.size)):
                if value % self.erase_block:
                    raise ValueError(
                        f"partition {p.name!r} {what} 0x{value:x} is not a multiple of the "
                        f"erase block 0x{self.erase_block:x}: erasing it would clear bytes "
                        "of its neighbour")
            end = p.end
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

    def env_partition(self) -> Partition | None:
        """The partition U-Boot's saveenv may write, if the board declares one."""
        return next((p for p in self.partitions if p.saveenv), None)


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
        if self.qemu and self.qemu.pflash_unit is not None and self.flash is None:
            raise ValueError("qemu.pflash_unit emulates the board's flash: add [flash]")
        if self.kernel.fit and self.kernel.fit.ramdisk_load is None \
                and self.uboot.ramdisk_addr is None:
            raise ValueError("kernel.fit needs ramdisk_load (or uboot.ramdisk_addr)")
        return self

    def firmware_partition(self) -> Partition | None:
        """Where the firmware image goes, when the board has flash."""
        return self.flash.partition(self.flash.firmware) if self.flash else None

    @property
    def kernel_source(self) -> Source:
        """The pinned source the kernel is built from."""
        return self.sources[self.kernel.source]
