"""The board model: everything a board folder says, validated once at load.

Relative paths are resolved against the board folder (passed as validation
context ``{"dir": Path}``) and must exist; references between parts (sources,
overlays, packages) are resolved by the loader, so the rest of the code can
trust the model as it is.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from embedbuild.model.access_point import Interface, Radio
from embedbuild.model.base import Strict
from embedbuild.model.signing import Signing
from embedbuild.model.source import Source
from embedbuild.model.system import System


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("dir")
    path = value if value.is_absolute() or base is None else Path(base) / value
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path.resolve()


def _patch(path: Path) -> Path:
    # `patch` reports "Only garbage was found" only once the 1.5 GB tree is unpacked.
    if not re.search(rb"^--- .*\n\+\+\+ ", path.read_bytes(), re.M):
        raise ValueError(f"{path.name} is not a patch: it has no unified diff "
                         "('--- a/FILE' and '+++ b/FILE' lines)")
    return path


def _tree_path(value: str) -> str:
    # Paths inside a source tree: make and copy them, so they must stay inside it.
    if value.startswith("/") or any(p in ("", ".", "..") for p in value.split("/")):
        raise ValueError(f"{value!r} must be a relative path inside the tree, without . or ..")
    if not re.fullmatch(r"[A-Za-z0-9_.,+/-]+", value):
        raise ValueError(f"{value!r} has characters a make target cannot have")
    return value


BoardFile = Annotated[Path, AfterValidator(_resolve)]
PatchFile = Annotated[Path, AfterValidator(_resolve), AfterValidator(_patch)]
TreePath = Annotated[str, AfterValidator(_tree_path)]
Address = Annotated[int, Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]


def _uimage_address(value: int | str) -> int | str:
    # The legacy uImage header holds 32-bit load and entry addresses, whatever the CPU.
    if isinstance(value, int) and not 0 <= value <= 0xFFFF_FFFF:
        raise ValueError(f"{value:#x} does not fit the uImage header's 32-bit address")
    return value


UImageAddress = Annotated[int, AfterValidator(_uimage_address)]


def _config_target(value: str) -> str:
    # The make targets that write a whole .config from nothing (the kernel's
    # scripts/kconfig/Makefile; U-Boot's is the same). Anything else, e.g.
    # `kernelversion`, leaves no .config to merge the fragments into; randconfig would
    # make the build depend on chance.
    if not re.fullmatch(r"(allno|allyes|allmod|alldef|tiny|def)config"
                        r"|[A-Za-z0-9][A-Za-z0-9_.-]*_defconfig", value):
        raise ValueError(f"{value!r} is not a make target that writes a .config: use "
                         "allnoconfig, tinyconfig, defconfig or a NAME_defconfig")
    return value


ConfigTarget = Annotated[str, AfterValidator(_config_target)]


class Arch(StrEnum):
    """Kernel architectures embedbuild knows how to build for."""

    arm = "arm"
    arm64 = "arm64"
    mips = "mips"


# Per ARCH: the CPU part a GNU triplet starts with, an example toolchain, the images
# its boot Makefile (or the top one, for vmlinux) makes, and the qemu-system binaries
# that emulate it.
ARCH_CPU = {Arch.arm: r"arm(v\d+\w*)?(eb)?", Arch.arm64: r"aarch64(_be)?",
            Arch.mips: r"mips(isa\d+r\d+)?(64)?(el)?"}
ARCH_TOOLCHAIN = {Arch.arm: "arm-linux-gnueabihf-", Arch.arm64: "aarch64-linux-gnu-",
                  Arch.mips: "mips-linux-gnu-"}
ARCH_IMAGES = {Arch.arm: ("zImage", "Image", "vmlinux"),
               Arch.arm64: ("Image", "Image.gz", "vmlinux"),
               Arch.mips: ("vmlinux.bin", "vmlinux")}
ARCH_QEMU = {Arch.arm: ("qemu-system-arm",), Arch.arm64: ("qemu-system-aarch64",),
             Arch.mips: ("qemu-system-mips", "qemu-system-mipsel", "qemu-system-mips64",
                         "qemu-system-mips64el")}


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
    load: UImageAddress
    entry: Annotated[int | Literal["elf"], AfterValidator(_uimage_address)] = "elf"
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

    A board's [kernel] may say ``from = "BOARD"`` instead of source, base, fragments,
    patches and image: the loader (load.py) then fills those in from that board, whose
    kernel build this board shares (Board.kernel_owner).

    Args:
        source: name of a source in the lock (boards/common/lock.toml) or the board's
            [sources].
        base: the kernel make target the config starts from: allnoconfig (which takes
            the fragments as KCONFIG_ALLCONFIG: what they do not ask for is off) or a
            defconfig (the fragments over it, then olddefconfig).
        fragments: Kconfig fragments, merged in order; a symbol set differently in
            two fragments is an error.
        patches: applied in order with ``patch -p1``.
        image: the kernel make target that produces the image.
        uimage: wrap the image in a legacy uImage.
        fit: also package the image and the separate initramfs as a FIT image.
        dts: a device tree source compiled with the kernel's dtc and include paths.
        dtb: or an in-tree DTB target, e.g. "rockchip/rk3326-odroid-go2.dtb".
        unserved: DTB node path -> why: enabled nodes this kernel leaves without a driver
            on purpose (the DTB check fails on any other, and on a listed node that is
            served or not there).
        cmdline: kernel command line given by the bootloader.
    """

    source: str
    base: ConfigTarget = "allnoconfig"
    fragments: list[BoardFile] = Field(min_length=1)
    patches: list[PatchFile] = []
    image: Literal["zImage", "Image", "Image.gz", "vmlinux.bin", "vmlinux"]
    uimage: UImage | None = None
    fit: Fit | None = None
    dts: BoardFile | None = None
    dtb: TreePath | None = None
    unserved: dict[Annotated[str, Field(pattern=r"^/[^\s]*$")],
                   Annotated[str, Field(min_length=1)]] = {}
    cmdline: str = ""

    @field_validator("dtb")
    @classmethod
    def _dtb_name(cls, v: str | None) -> str | None:
        if v is not None and not v.endswith(".dtb"):
            raise ValueError(f"{v!r} is not a DTB target: it names a .dtb under "
                             "arch/ARCH/boot/dts, e.g. \"rockchip/rk3326-odroid-go2.dtb\"")
        return v

    @field_validator("cmdline")
    @classmethod
    def _cmdline(cls, v: str) -> str:
        # U-Boot gets it as setenv bootargs '...': a quote or a control character would end
        # the command early and run the rest as U-Boot commands.
        if bad := re.search(r"['\x00-\x1f\x7f]", v):
            raise ValueError(f"{bad.group()!r} cannot be in a kernel command line U-Boot sets "
                             "(no single quotes, no control characters)")
        return v

    @model_validator(mode="after")
    def _one_dt(self) -> Self:
        if self.dts is not None and self.dtb is not None:
            raise ValueError("give either dts or dtb, not both")
        if self.uimage is not None and self.uimage.append_dtb and self.dts is None and not self.dtb:
            raise ValueError("uimage.append_dtb needs a dts or dtb")
        if self.unserved and self.dts is None and self.dtb is None:
            raise ValueError("unserved names nodes of the board's DTB: give a dts or dtb")
        return self


class UBootBuild(Strict):
    """U-Boot built from source for the board, through the checked Kconfig merge.

    Args:
        source: name of a pinned source (e.g. Debian's u-boot 2023.01).
        defconfig: U-Boot's defconfig target, e.g. malta_defconfig.
        fragments: Kconfig fragments over it, merged in order and verified.
        patches: applied in order with ``patch -p1`` before the configuration (a patch
            may add Kconfig symbols the fragments then set).
        image: the built file the board's flash or QEMU starts.
        control_dts: device tree source (in the board folder) that becomes U-Boot's own
            control DTB, appended to u-boot-nodtb.bin (CONFIG_OF_SEPARATE): for a board
            whose U-Boot would take its DTB from the stage before it (QEMU, a vendor
            loader), a DTB that could lack [signing]'s keys. Default: U-Boot's u-boot.dtb.
    """

    source: str
    defconfig: ConfigTarget
    fragments: list[BoardFile] = []
    patches: list[PatchFile] = []
    image: TreePath = "u-boot.bin"
    control_dts: BoardFile | None = None


class UBoot(Strict):
    """What the board's U-Boot looks like and where things go in RAM.

    Args:
        prompt: the U-Boot prompt, e.g. "=> " or "ath> ".
        autoboot: regex of the line that offers to stop autoboot.
        kernel_addr: RAM address the kernel image is loaded to.
        ramdisk_addr: RAM address a separate initramfs is loaded to.
        fdt_addr: address of the device tree the bootloader passes; None when
            the image carries its own.
        fit_addr: RAM address a whole FIT image is loaded to over TFTP (a board with
            [signing] boots one); bootm copies its kernel and initramfs out from there.
        tftp_blocksize: tftpblocksize to set (fits a 1500-byte MTU by default; a larger
            block comes in IP fragments, which a U-Boot built here is configured to
            reassemble, and which a U-Boot without IP_DEFRAG refuses by asking for 1468).
        tftp_windowsize: tftpwindowsize to set (RFC 7440; U-Boot ignores it when built without).
        net_start: commands that bring up the network device before the first TFTP
            transfer, e.g. ``usb start`` for a USB Ethernet adapter.
        build: build U-Boot from source (else the board's own U-Boot is used).
    """

    prompt: str = Field(default="=> ", min_length=1)
    autoboot: str = Field(default="Hit any key to stop autoboot", min_length=1)
    kernel_addr: Address
    ramdisk_addr: Address | None = None
    fdt_addr: Address | None = None
    fit_addr: Address | None = None
    tftp_blocksize: int = Field(default=1468, ge=512, le=65464)
    tftp_windowsize: int = Field(default=1, ge=1, le=64)
    net_start: list[Annotated[str, Field(min_length=1, pattern=r"^[^\x00-\x1f\x7f]+$")]] = []
    build: UBootBuild | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if re.search(r"[\x00-\x1f\x7f]", v):
            raise ValueError("a prompt is the text U-Boot prints on its line: no control "
                             "characters (newlines included)")
        return v

    @field_validator("autoboot")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        seen: dict[int, str] = {}
        for key in ("kernel_addr", "ramdisk_addr", "fdt_addr", "fit_addr"):
            addr = getattr(self, key)
            if addr is None:
                continue
            if addr in seen:
                raise ValueError(f"{key} and {seen[addr]} are both 0x{addr:x}: one would "
                                 "overwrite the other in RAM")
            seen[addr] = key
        return self


# The speeds termios can set (B50 ... B4000000): a serial driver refuses others.
BAUD_RATES = (50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200,
              38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000,
              1500000, 2000000, 2500000, 3000000, 3500000, 4000000)


class Serial(Strict):
    """The board's serial console.

    Args:
        baud: line speed.
        write_chunk: bytes sent at once (0: whole lines); boards without flow control need small.
        write_delay: seconds between chunks.
    """

    baud: int = 115200
    write_chunk: int = Field(default=0, ge=0, le=4096)
    # Above a second per chunk a command takes minutes to type: a unit mistake (ms?).
    write_delay: float = Field(default=0.0, ge=0, le=1.0)

    @field_validator("baud")
    @classmethod
    def _standard(cls, v: int) -> int:
        if v not in BAUD_RATES:
            raise ValueError(f"{v} is not a standard line speed (e.g. 115200; known: "
                             f"{', '.join(map(str, BAUD_RATES))})")
        return v


# A -M/-cpu/-device value: a name, maybe with ,key=value options.
QEMU_VALUE = r"^[A-Za-z0-9][A-Za-z0-9_.,=+-]*$"


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
        sd_device: the QEMU device the SD-card image is attached as (boot --from-sd): a
            virtio disk, which the board's U-Boot scans in its distro boot.
        extra: more QEMU arguments.
    """

    # A name looked up on PATH, or the path of a QEMU built elsewhere.
    system: str = Field(pattern=r"^(/[^\s]*/)?qemu-system-[a-z0-9_]+$")
    machine: str = Field(pattern=QEMU_VALUE)
    cpu: str | None = Field(default=None, pattern=QEMU_VALUE)
    memory: str = Field(default="256M", pattern=r"^[1-9][0-9]*[MG]?$")
    firmware: Path | None = None
    nic: str = Field(default="virtio-net-device", pattern=QEMU_VALUE)
    nodefaults: bool = False
    pflash_unit: int | None = Field(default=None, ge=0)
    sd_device: str = Field(default="virtio-blk-device", pattern=QEMU_VALUE)
    extra: list[str] = []


# The cross toolchain's own C library (Debian's cross toolchains ship glibc): programs
# link it as the toolchain does, dynamic ones get its shared libraries in the image.
TOOLCHAIN_LIBC = "glibc"


def _libc(name: str, info: ValidationInfo) -> str:
    """The toolchain's libc, or a libc recipe (the loader gives the registry's facts:
    name -> kind, "libc" for a C library)."""
    known = (info.context or {}).get("packages")
    libcs = sorted(n for n, kind in (known or {}).items() if kind == "libc")
    if known is not None and name != TOOLCHAIN_LIBC and name not in libcs:
        raise ValueError(f"{name!r} is not a C library embedbuild builds with: use "
                         f"{', '.join([*libcs, TOOLCHAIN_LIBC])} (the toolchain's own)")
    return name


class Userland(Strict):
    """The board's userland build.

    Args:
        busybox: Kconfig fragments for busybox (over its defconfig), merged in order.
        libc: the C library every package is built against: a libc recipe (musl:
            small, static, built per toolchain from the lock) or "glibc", the cross
            toolchain's own.
    """

    busybox: list[BoardFile] = Field(min_length=1)
    libc: Annotated[str, AfterValidator(_libc)] = "musl"


ERASE_BLOCK = 0x1000


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

    # It becomes a label string in the generated .dtsi and an MTD name on the device.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=32)
    offset: Address
    size: int = Field(gt=0)
    read_only: bool = False
    saveenv: bool = False

    @property
    def end(self) -> int:
        """The first byte after the partition."""
        return self.offset + self.size

    @field_validator("offset", "size")
    @classmethod
    def _aligned(cls, v: int) -> int:
        # Linux forces a partition that is not erase-block aligned read-only; 4 KiB is the
        # smallest erase block of SPI NOR flash.
        if v % ERASE_BLOCK:
            raise ValueError(f"{v:#x} is not a multiple of the 4 KiB erase block")
        return v


class FlashEnv(Strict):
    """U-Boot's environment in the flash, where and how the board's U-Boot keeps it (its
    CONFIG_ENV_* options): one copy (not redundant), ``size`` bytes at ``offset`` in its
    partition: a little-endian or big-endian (the CPU's) crc32 of the rest, then
    ``name=value`` strings each ended by a NUL, an empty one after the last.

    Args:
        partition: the partition holding it (declared ``saveenv = true``).
        offset: where it starts in that partition (CONFIG_ENV_ADDR minus the start).
        size: its length (CONFIG_ENV_SIZE).
        sector: what saveenv erases to rewrite it (CONFIG_ENV_SECT_SIZE): a whole number
            of erase blocks, at least ``size``.
    """

    partition: str
    offset: int = Field(default=0, ge=0)
    size: int = Field(gt=8, le=1 << 24)
    sector: int = Field(gt=0)


# The slot names U-Boot's variables carry (BOOT_A_LEFT, BOOT_ORDER="A B").
SLOTS = ("A", "B")


class FlashAb(Strict):
    """Two firmware slots and boot counters in U-Boot's environment (A/B updates): U-Boot
    boots the first slot of BOOT_ORDER with tries left, counting one down each time; the
    system that comes up healthy counts its slot's back up (marks it good).

    Args:
        a: the partition of slot A.
        b: the partition of slot B.
        tries: boot attempts a slot gets before U-Boot goes on to the other (at most 9: the
            counter stays one digit, the same in U-Boot's hexadecimal and in decimal).
        panic: seconds after a kernel panic before the kernel restarts the board (the
            kernel's panic=), so that a slot whose kernel panics costs one try, not a
            board that hangs.
        confirmed: the A/B boot has been run on this board's own U-Boot (saveenv keeps the
            counters across resets, the commands exist). Until then `embedbuild update`
            refuses the board.
        fallback: what U-Boot runs when neither slot holds an intact image (a board fresh
            from the factory): its standard boot.
    """

    a: str
    b: str
    tries: int = Field(default=3, ge=1, le=9)
    panic: int = Field(default=1, ge=1, le=300)
    confirmed: bool = False
    # Run inside the boot script, itself stored in single quotes: none in here.
    fallback: str = Field(default="run distro_bootcmd", min_length=1,
                          pattern=r"^[^'\x00-\x1f\x7f]+$")

    def partition_of(self, slot: str) -> str:
        """The partition of slot "A" or "B"."""
        return self.a if slot == "A" else self.b


class FlashLinux(Strict):
    """How Linux finds the flash when the device tree the board boots with does not list
    its partitions (QEMU's own DTB): the partitions are then given on the kernel's command
    line (``mtdparts=``, CONFIG_MTD_CMDLINE_PARTS).

    Args:
        mtd: the name of the MTD device the flash is part of (its driver's name for it).
        offset: where this flash starts inside that device.
    """

    mtd: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    offset: int = Field(default=0, ge=0)


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
        env: where U-Boot keeps its environment (for A/B updates and `embedbuild slots`).
        ab: two firmware slots with boot counters (A/B updates, `embedbuild update`).
        linux: how Linux finds the flash's partitions, when not from the device tree.
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
    env: FlashEnv | None = None
    ab: FlashAb | None = None
    linux: FlashLinux | None = None

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

    def slot_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What is wrong with the environment and the A/B slots, as (key path, message)."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        names = {p.name: p for p in self.partitions}
        env = self.env
        if env is not None:
            part = names.get(env.partition)
            if part is None:
                out.append((("flash", "env", "partition"),
                            f"no partition {env.partition!r} in the layout (known: "
                            f"{', '.join(names)})"))
            else:
                if env.sector % self.erase_block or env.offset % self.erase_block:
                    out.append((("flash", "env", "sector"),
                                f"the environment's offset 0x{env.offset:x} and sector "
                                f"0x{env.sector:x} must be whole erase blocks "
                                f"(0x{self.erase_block:x}): saveenv erases them"))
                if env.size > env.sector:
                    out.append((("flash", "env", "size"),
                                f"the environment (0x{env.size:x} bytes) is larger than the "
                                f"sector saveenv erases for it (0x{env.sector:x})"))
                if env.offset + env.sector > part.size:
                    out.append((("flash", "env", "offset"),
                                f"the environment (0x{env.offset:x} + 0x{env.sector:x}) "
                                f"reaches past partition {part.name!r} (0x{part.size:x} "
                                "bytes)"))
        ab = self.ab
        if ab is None:
            return out
        if env is None:
            out.append((("flash", "ab"), "A/B slots keep their boot counters in U-Boot's "
                        "environment: declare where it is ([flash.env])"))
        elif ab.confirmed and env.partition in names and not names[env.partition].saveenv:
            out.append((("flash", "ab", "confirmed"),
                        f"A/B updates rewrite U-Boot's environment: declare partition "
                        f"{env.partition!r} saveenv = true (its U-Boot's saveenv keeps it)"))
        for key, name in (("a", ab.a), ("b", ab.b)):
            part = names.get(name)
            if part is None:
                out.append((("flash", "ab", key),
                            f"no partition {name!r} in the layout (known: "
                            f"{', '.join(names)})"))
            elif part.read_only:
                out.append((("flash", "ab", key),
                            f"slot partition {name!r} is read_only: an update writes it"))
            elif part.saveenv or (env is not None and name == env.partition):
                out.append((("flash", "ab", key),
                            f"slot partition {name!r} holds U-Boot's environment"))
        if ab.a == ab.b:
            out.append((("flash", "ab", "b"),
                        f"slots A and B are both partition {ab.a!r}: an update would "
                        "overwrite the running system"))
        return out

    def env_partition(self) -> Partition | None:
        """The partition U-Boot's saveenv may write, if the board declares one."""
        return next((p for p in self.partitions if p.saveenv), None)


SECTOR = 512


def _sector_aligned(v: int) -> int:
    if v % SECTOR:
        raise ValueError(f"{v:#x} is not a multiple of the {SECTOR}-byte sector")
    return v


Sectors = Annotated[int, Field(ge=0), AfterValidator(_sector_aligned)]


class SdRaw(Strict):
    """A raw bootloader blob written at a fixed place on the card, outside the partitions
    (the RK3326's idbloader at sector 64, u-boot.itb at sector 16384).

    Args:
        name: what it is, e.g. "idbloader".
        offset: where it starts on the card, in bytes; a multiple of the sector.
        size: the space reserved for it, in bytes: the file may not be larger, and nothing
            else may be written there.
        file: the blob, relative to the board folder; or
        env: the environment variable that names the blob at build time (blobs the user
            supplies, e.g. a bootloader built with the vendor's binary DDR init). When
            it is unset, the image is built without the blob and manifest.json says so.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=32)
    offset: Sectors
    size: Annotated[int, Field(gt=0), AfterValidator(_sector_aligned)]
    file: BoardFile | None = None
    env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")

    @property
    def end(self) -> int:
        """The first byte after the reserved space."""
        return self.offset + self.size

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.file is None) == (self.env is None):
            raise ValueError(f"raw blob {self.name!r}: give either file (in the board "
                             "folder) or env (a variable naming the file at build time)")
        return self


class SdCard(Strict):
    """The SD-card image: a partition table, one FAT boot partition holding the kernel,
    the DTB, the initramfs and extlinux/extlinux.conf (what U-Boot's distro boot reads),
    and raw bootloader blobs before the partition.

    Args:
        table: the partition table ("mbr": what Rockchip's boot ROM and U-Boot read).
        partition_offset: where the boot partition starts, in bytes (1 MiB by default;
            after the raw blobs on boards that have them).
        margin: free bytes in the boot partition beyond its files (it is sized to them).
        label: the FAT volume label.
        raw: raw blobs, each between the partition table and the boot partition.
    """

    table: Literal["mbr"] = "mbr"
    partition_offset: Annotated[int, Field(ge=SECTOR), AfterValidator(_sector_aligned)] = \
        0x100000
    margin: int = Field(default=0x100000, ge=0, le=1 << 34)
    label: str = Field(default="BOOT", pattern=r"^[A-Z0-9_-]{1,11}$")
    raw: list[SdRaw] = []

    def layout_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Raw blobs that overlap the partition table, the boot partition or each other,
        as (key path, message)."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, int] = {}
        for i, r in enumerate(self.raw):
            if r.name in seen:
                out.append((("sdcard", "raw", i, "name"),
                            f"raw blob {r.name!r} is listed twice"))
            seen.setdefault(r.name, i)
            if r.offset < SECTOR:
                out.append((("sdcard", "raw", i, "offset"),
                            f"raw blob {r.name!r} at {r.offset:#x} overlaps the partition "
                            f"table (the first {SECTOR} bytes)"))
            if r.end > self.partition_offset:
                out.append((("sdcard", "raw", i, "size"),
                            f"raw blob {r.name!r} ({r.offset:#x}..{r.end:#x}) overlaps the boot "
                            f"partition, which starts at partition_offset "
                            f"{self.partition_offset:#x}"))
            for j, other in enumerate(self.raw[:i]):
                if r.offset < other.end and other.offset < r.end:
                    out.append((("sdcard", "raw", i, "offset"),
                                f"raw blob {r.name!r} ({r.offset:#x}..{r.end:#x}) overlaps "
                                f"{other.name!r} ({other.offset:#x}..{other.end:#x}, "
                                f"sdcard.raw[{j}])"))
        return out


_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
          "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def _byte_size(value: object) -> int:
    """Bytes from an integer or a string with a unit ("2.5 MiB", "900 KiB", "1e6" not)."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*",
                                                       value)) and m.group(2) in _UNITS:
        n = int(float(m.group(1)) * _UNITS[m.group(2)])
    else:
        units = ", ".join(u for u in _UNITS if u)
        raise ValueError(f'not a size: a number of bytes, or with a unit ({units}), e.g. '
                         '"2.5 MiB"')
    if n <= 0:
        raise ValueError("a budget must be more than 0 bytes")
    return n


class SizeBudget(Strict):
    """What a boot may weigh: `embedbuild size` prints used / budget / left, and a build
    over it fails (BudgetError), so an image that outgrew its flash or its goal is
    noticed when it grows, not when it is flashed.

    Args:
        budget: the most bytes U-Boot loads for a boot (the "total loaded" of `embedbuild
            size`: the kernel file and a separate initramfs), as bytes or with a unit
            ("2.5 MiB", "900 KiB").
    """

    budget: Annotated[int, BeforeValidator(_byte_size)]


class Board(Strict):
    """A board folder, validated. ``name`` and ``dir`` come from the folder;
    ``interfaces`` are its wired network interfaces and ``radios`` its wireless ones
    (what an access point system may use);
    ``kernel_owner`` is the board whose kernel this one boots (its kernel.from),
    loaded by the loader: ``kernel`` then holds that board's kernel build keys and this
    board's own cmdline, DTB and packaging."""

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
    sdcard: SdCard | None = None
    size: SizeBudget | None = None
    interfaces: list[Interface] = []
    radios: list[Radio] = []
    signing: Signing | None = None
    kernel_owner: Board | None = Field(default=None, exclude=True, repr=False)
    # What the lock says the board's toolchain (and the build host's) is: Debian package
    # -> version (model/lock.py); injected by the loader.
    locked_toolchain: dict[str, str] = {}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kernel_from(self) -> str | None:
        """The board whose kernel build (one store item) this board boots, if not its own."""
        return self.kernel_owner.name if self.kernel_owner else None

    @property
    def kernel_board(self) -> Board:
        """The board whose kernel definition builds this board's kernel."""
        return self.kernel_owner or self

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

    @property
    def word_bits(self) -> int:
        """The CPU's word size: what an address in RAM can reach."""
        return 64 if self.arch == Arch.arm64 or self.cross_compile.startswith("mips64") else 32

    @property
    def big_endian(self) -> bool:
        """Whether the toolchain (hence the kernel and userland) is big-endian."""
        cpu = self.cross_compile.split("-", 1)[0]
        return cpu.endswith(("eb", "_be")) or (cpu.startswith("mips") and not cpu.endswith("el"))

    def mismatches(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Keys that are each valid alone but contradict another one, as (key path,
        message): what only make, the toolchain or the board would otherwise find out."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        cpu = self.cross_compile.split("-", 1)[0]
        toolchain_fits = re.fullmatch(ARCH_CPU[self.arch], cpu) is not None
        if not toolchain_fits:
            out.append((("cross_compile",),
                        f"{self.cross_compile!r} is a toolchain for {cpu}, not for arch "
                        f"{self.arch.value!r} (e.g. {ARCH_TOOLCHAIN[self.arch]!r})"))
        if self.kernel.image not in ARCH_IMAGES[self.arch]:
            out.append((("kernel", "image"),
                        f"{self.kernel.image!r} is not a kernel image of arch "
                        f"{self.arch.value!r}: use one of {', '.join(ARCH_IMAGES[self.arch])}"))
        limit = (1 << self.word_bits) - 1
        for key in ("kernel_addr", "ramdisk_addr", "fdt_addr", "fit_addr"):
            addr = getattr(self.uboot, key)
            if addr is not None and addr > limit:
                out.append((("uboot", key),
                            f"0x{addr:x} is beyond the {self.word_bits}-bit address space of "
                            f"arch {self.arch.value!r}"))
        if self.qemu and Path(self.qemu.system).name not in ARCH_QEMU[self.arch]:
            out.append((("qemu", "system"),
                        f"{self.qemu.system!r} does not emulate arch {self.arch.value!r}: use "
                        f"{' or '.join(ARCH_QEMU[self.arch])}"))
        elif self.qemu and self.arch == Arch.mips and toolchain_fits and \
                Path(self.qemu.system).name.endswith("el") == self.big_endian:
            endian = "big" if self.big_endian else "little"
            out.append((("qemu", "system"),
                        f"{self.qemu.system!r} emulates the other byte order than the "
                        f"{endian}-endian toolchain {self.cross_compile!r}"))
        if self.sdcard is not None:
            out += self.sdcard.layout_problems()
        if self.flash is not None:
            out += self.flash.slot_problems()
        ab = self.flash.ab if self.flash else None
        if self.system is not None and self.system.health is not None and ab is None:
            out.append((("system", "health"), "a system marks its A/B slot good: the board "
                        "declares no slots ([flash.ab])"))
        if ab is not None and (bad := re.search(r'["$\\]', self.kernel.cmdline)):
            # The A/B boot sets it inside a double-quoted U-Boot string.
            out.append((("kernel", "cmdline"), f"{bad.group()!r} cannot be in the command "
                        "line of an A/B board (U-Boot's boot script quotes it)"))
        seen: dict[str, str] = {f"interface {i}": "interfaces" for i in self.interfaces}
        if len(seen) != len(self.interfaces):
            out.append((("interfaces",), "an interface is listed twice"))
        for i, r in enumerate(self.radios):
            for what in (f"radio {r.name}", f"wiphy {r.phy}", f"interface {r.interface}"):
                if what in seen:
                    field = what.split()[0].replace("wiphy", "phy").replace("radio", "name")
                    out.append((("radios", i, field),
                                f"{what} is declared twice (also in {seen[what]})"))
                seen.setdefault(what, f"radios[{i}]")
        if self.signing is not None:
            out += self._signing_problems()
        return out

    def _signing_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        # Verified boot boots signed FITs only: what would boot anything else is refused.
        out: list[tuple[tuple[str | int, ...], str]] = []
        if self.kernel.fit is None:
            out.append((("signing",), "[signing] signs the FIT image: add [kernel.fit]"))
        if self.kernel.uimage is not None:
            out.append((("kernel", "uimage"), "a legacy uImage carries no signature, and "
                        "[signing] boots signed FITs only: remove [kernel.uimage]"))
        if self.uboot.fit_addr is None:
            out.append((("uboot",), "[signing] boots the FIT over TFTP: give uboot.fit_addr "
                        "(a RAM address clear of kernel_addr and ramdisk_addr)"))
        if self.system is not None and self.system.initramfs == "builtin":
            out.append((("system", "initramfs"), "[signing] signs the initramfs inside the "
                        "FIT: use initramfs = \"separate\""))
        return out

    def firmware_partition(self) -> Partition | None:
        """Where the firmware image goes, when the board has flash."""
        return self.flash.partition(self.flash.firmware) if self.flash else None

    @property
    def kernel_source(self) -> Source:
        """The pinned source the kernel is built from."""
        return self.sources[self.kernel.source]
