"""U-Boot command lists: what embedbuild types at a board's U-Boot prompt.

The one place U-Boot command text is written. The build puts the TFTP boot
commands into manifest.json; the bench (rig/) only sends what it gets from here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from embedbuild.fit import VERSION_PROP
from embedbuild.model.board import Board, Flash, Partition, UBoot

if TYPE_CHECKING:  # the bench's type; the build never makes one
    from embedbuild.rig.resource import LanLink

# The boot command for each raw kernel image (a uImage is booted with bootm).
BOOT_COMMAND = {"zImage": "bootz", "Image": "booti", "Image.gz": "booti"}
# The FIT configuration embedbuild writes (steps/fit.py). bootm names it: Debian's
# qemu_arm U-Boot answers a bare FIT address with "Could not find configuration node".
FIT_CONFIG = "conf-1"
# The environment variable holding the lowest anti-rollback version (the configuration's
# VERSION_PROP) the device still boots.
MIN_VERSION = "min_version"
# The environment variable holding the rollback check (a script: `run check_version`).
CHECK_VERSION = "check_version"
# What the rollback check prints when it refuses (the bench's U-Boot driver knows it).
REFUSED = "embedbuild: refused"


def network(uboot: UBoot, link: LanLink | None) -> list[str]:
    """Commands that put U-Boot on the bench's network (``link``: this machine's address
    and the board's; None: placeholders, for a listing) with the board's TFTP settings
    (after the board's own commands that bring the network device up)."""
    device, server, mask = ((link.device_ip, link.server_ip, link.netmask) if link
                            else ("<device-ip>", "<server-ip>", "<netmask>"))
    return [
        *uboot.net_start,
        f"setenv ipaddr {device}",
        f"setenv serverip {server}",
        f"setenv netmask {mask}",
        f"setenv tftpblocksize {uboot.tftp_blocksize}",
        f"setenv tftpwindowsize {uboot.tftp_windowsize}",
    ]


# A command line U-Boot takes on every board (CONFIG_SYS_CBSIZE is 256 at the least).
LINE_LIMIT = 256


def batched(cmds: list[str], limit: int = LINE_LIMIT) -> list[str]:
    """``cmds`` with each run of consecutive ``setenv`` commands joined into one line
    ("a; b") as long as it fits in ``limit`` bytes: one round trip at the prompt
    instead of one each. A failed setenv still shows (U-Boot prints "## Error");
    other commands stay alone, so each keeps its own exit status."""
    out: list[str] = []
    for cmd in cmds:
        if (cmd.startswith("setenv ") and out and out[-1].startswith("setenv ")
                and len(out[-1]) + 2 + len(cmd) <= limit):
            out[-1] += "; " + cmd
        else:
            out.append(cmd)
    return out


def tftp_patience(timeout_ms: int, retries: int) -> list[str]:
    """Commands that set how long U-Boot waits for a TFTP block and how often it retries
    before giving up ("Retry count exceeded")."""
    return [f"setenv tftptimeout {timeout_ms}", f"setenv tftptimeoutcountmax {retries}"]


def tftp_load(address: int, filename: str) -> str:
    """Load a file from the TFTP server into RAM (U-Boot sets ${filesize})."""
    return f"tftpboot 0x{address:x} {filename}"


def tftp_boot(board: Board, kernel_file: str, initrd_file: str | None,
              dtb_file: str | None = None) -> list[str]:
    """Commands that TFTP-load and boot a result, once the network is set up; the last
    one boots. ``dtb_file``: the board's DTB, loaded to uboot.fdt_addr (before the
    initramfs, whose ${filesize} the boot command reads)."""
    u = board.uboot
    cmds = []
    if board.kernel.cmdline:
        cmds.append(f"setenv bootargs '{board.kernel.cmdline}'")
    cmds.append(tftp_load(u.kernel_addr, kernel_file))
    if dtb_file and u.fdt_addr is not None:
        cmds.append(tftp_load(u.fdt_addr, dtb_file))
    rd = "-"
    if initrd_file and u.ramdisk_addr is not None:
        cmds.append(tftp_load(u.ramdisk_addr, initrd_file))
        rd = f"0x{u.ramdisk_addr:x}:${{filesize}}"
    args = [f"0x{u.kernel_addr:x}", rd] + ([f"0x{u.fdt_addr:x}"] if u.fdt_addr is not None else [])
    if args[-1] == "-":  # nothing after the kernel: U-Boot wants no placeholder
        args.pop()
    boot = "bootm" if board.kernel.uimage else BOOT_COMMAND[board.kernel.image]
    cmds.append(" ".join([boot, *args]))
    return cmds


def fit_bootm(board: Board, address: int) -> str:
    """bootm of the FIT at ``address``: kernel and initramfs from the configuration it
    names (never ``bootm ADDR``, which FIT_BEST_MATCH refuses, nor ``ADDR:kernel-1``,
    an image by name with no configuration and so no signature check), with the DTB the
    firmware put at fdt_addr."""
    fit = f"0x{address:x}#{FIT_CONFIG}"
    fdt = [f"0x{board.uboot.fdt_addr:x}"] if board.uboot.fdt_addr is not None else []
    return " ".join(["bootm", fit, fit, *fdt])


def rollback_check(address: int) -> list[str]:
    """Commands that fail (printing REFUSED) unless the FIT at ``address`` holds an
    anti-rollback version in its configuration at least the environment's min_version
    (no min_version: any): the check is a script kept in the environment (CHECK_VERSION),
    which a saved bootcmd runs too. The version is covered by the configuration's
    signature, which bootm checks next: a changed number does not boot."""
    script = (f"if fdt addr 0x{address:x} && fdt get value fitver /configurations/{FIT_CONFIG}"
              f" {VERSION_PROP}; then if env exists {MIN_VERSION} && test ${{fitver}} -lt "
              f"${{{MIN_VERSION}}}; then echo \"{REFUSED}: version ${{fitver}} is below "
              f"{MIN_VERSION} ${{{MIN_VERSION}}}\"; false; else true; fi; else echo "
              f"\"{REFUSED}: the image holds no {VERSION_PROP}\"; false; fi")
    return [f"setenv {CHECK_VERSION} '{script}'", f"run {CHECK_VERSION}"]


def signed_fit_boot(board: Board, fit_file: str) -> list[str]:
    """Commands that TFTP-load a signed FIT to uboot.fit_addr and boot it through its
    configuration, so U-Boot checks the signature (after the anti-rollback check when the
    board gives its images a version); the last one boots."""
    u = board.uboot
    assert u.fit_addr is not None  # the model requires it of a board with [signing]
    cmds = [f"setenv bootargs '{board.kernel.cmdline}'"] if board.kernel.cmdline else []
    cmds.append(tftp_load(u.fit_addr, fit_file))
    if board.signing is not None and board.signing.version is not None:
        cmds += rollback_check(u.fit_addr)
    cmds.append(fit_bootm(board, u.fit_addr))
    return cmds


# -- flash ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlashCommand:
    """One command of a flash sequence and what the host checks in its output.

    Args:
        text: the command line sent to U-Boot.
        step: the step it belongs to (load, check, erase, write, read back).
        expect: "filesize" (``printenv filesize`` must show ``value``) or "crc32" (the
            crc32 U-Boot prints must be ``value``); None: only its status is checked.
        value: the expected filesize or crc32.
    """

    text: str
    step: str
    expect: str | None = None
    value: int = 0

    def describe(self) -> str:
        """The command as --dry-run prints it, with its check."""
        if self.expect == "filesize":
            return f"{self.text:52} # must be 0x{self.value:x} ({self.value:,} bytes)"
        if self.expect == "crc32":
            return f"{self.text:52} # must be {self.value:08x}"
        return self.text


def flash_address(flash: Flash, part: Partition, offset: int = 0) -> int:
    """Where U-Boot addresses a byte of a partition: its mapped address, or for SPI NOR
    the offset in the flash."""
    return (flash.mapped or 0) + part.offset + offset if flash.dialect == "nor" \
        else part.offset + offset


def erased_crc(length: int) -> int:
    """crc32 of ``length`` erased (0xff) bytes."""
    crc, chunk = 0, b"\xff" * min(length, 1 << 20)
    while length > 0:
        crc = zlib.crc32(chunk[:length], crc)
        length -= len(chunk)
    return crc


def flash_write(board: Board, part: Partition, filename: str, size: int,
                crc: int) -> list[FlashCommand]:
    """Load an image over TFTP, check the RAM copy, erase exactly the partition's erase
    blocks, write the image, read it back, and check that the rest of the partition is
    erased. Runs after ``network``; every crc32 and the filesize are checked by the host
    before the next command is sent."""
    flash = board.flash
    assert flash is not None
    ram = board.uboot.kernel_addr
    at = flash_address(flash, part)
    tail = part.size - size
    cmds = [FlashCommand(tftp_load(ram, filename), "load"),
            FlashCommand("printenv filesize", "load", "filesize", size),
            FlashCommand(f"crc32 0x{ram:x} 0x{size:x}", "check RAM copy", "crc32", crc)]
    if flash.dialect == "nor":
        cmds += [FlashCommand(f"protect off 0x{at:x} +0x{part.size:x}", "erase"),
                 FlashCommand(f"erase 0x{at:x} +0x{part.size:x}", "erase"),
                 FlashCommand(f"cp.b 0x{ram:x} 0x{at:x} 0x{size:x}", "write"),
                 FlashCommand(f"crc32 0x{at:x} 0x{size:x}", "read back", "crc32", crc)]
        if tail:
            cmds.append(FlashCommand(f"crc32 0x{at + size:x} 0x{tail:x}", "check erased rest",
                                     "crc32", erased_crc(tail)))
        cmds.append(FlashCommand(f"protect on 0x{at:x} +0x{part.size:x}", "check erased rest"))
        return cmds
    rb = flash.readback_addr
    assert rb is not None
    cmds += [FlashCommand(f"sf probe {flash.sf_probe}", "erase"),
             FlashCommand(f"sf erase 0x{at:x} 0x{part.size:x}", "erase"),
             FlashCommand(f"sf write 0x{ram:x} 0x{at:x} 0x{size:x}", "write"),
             FlashCommand(f"sf read 0x{rb:x} 0x{at:x} 0x{size:x}", "read back"),
             FlashCommand(f"crc32 0x{rb:x} 0x{size:x}", "read back", "crc32", crc)]
    if tail:
        cmds += [FlashCommand(f"sf read 0x{rb:x} 0x{at + size:x} 0x{tail:x}",
                              "check erased rest"),
                 FlashCommand(f"crc32 0x{rb:x} 0x{tail:x}", "check erased rest", "crc32",
                              erased_crc(tail))]
    return cmds


def flash_compare(board: Board, part: Partition, size: int) -> str:
    """The command that shows the first byte where the written image differs from the RAM
    copy (U-Boot's cmp.b prints "byte at 0x.. (0x..) != byte at 0x.. (0x..)"); for SPI
    NOR it compares with the copy read back to RAM."""
    flash = board.flash
    assert flash is not None
    ram = board.uboot.kernel_addr
    there = flash_address(flash, part) if flash.dialect == "nor" else flash.readback_addr
    return f"cmp.b 0x{ram:x} 0x{there:x} 0x{size:x}"


def flash_range_crc(board: Board, part: Partition, offset: int, length: int) -> list[str]:
    """Commands whose last prints the crc32 of a range of the partition as stored (SPI
    NOR: read back to readback_addr first)."""
    flash = board.flash
    assert flash is not None
    at = flash_address(flash, part, offset)
    if flash.dialect == "nor":
        return [f"crc32 0x{at:x} 0x{length:x}"]
    rb = flash.readback_addr
    return [f"sf read 0x{rb:x} 0x{at:x} 0x{length:x}", f"crc32 0x{rb:x} 0x{length:x}"]


def flash_boot(board: Board, part: Partition, size: int) -> list[str]:
    """Commands that boot the image in a flash partition (``size``: its length, what SPI
    NOR reads back to RAM); the last one boots."""
    flash = board.flash
    assert flash is not None
    cmds = [f"setenv bootargs '{board.kernel.cmdline}'"] if board.kernel.cmdline else []
    if flash.dialect == "nor":
        image = flash_address(flash, part)
    else:
        assert flash.readback_addr is not None
        image = flash.readback_addr
        cmds += [f"sf probe {flash.sf_probe}",
                 f"sf read 0x{image:x} 0x{flash_address(flash, part):x} 0x{size:x}"]
    if board.kernel.fit:
        # The FIT's kernel and its own ramdisk, and the DTB the board's firmware put in RAM.
        if board.signing is not None and board.signing.version is not None:
            cmds += rollback_check(image)
        cmds.append(fit_bootm(board, image))
    else:
        cmds.append(f"bootm 0x{image:x}")
    return cmds


def set_bootcmd(board: Board, part: Partition, size: int) -> list[str]:
    """Store a bootcmd that boots the flashed partition unattended, with what it needs
    set beside it (bootargs, the rollback check); each command runs only if the one
    before succeeded (a refused rollback check, a failed read stops it)."""
    boot = flash_boot(board, part, size)
    cmds = [c for c in boot if c.startswith("setenv ")]
    rest = " && ".join(c for c in boot if not c.startswith("setenv "))
    return [*cmds, f"setenv bootcmd '{rest}'", "saveenv"]


# -- SD card -----------------------------------------------------------------------------


EXTLINUX_CONF = "extlinux/extlinux.conf"
# The label U-Boot's extlinux support boots (pxe_utils: the default label, no menu).
EXTLINUX_LABEL = "embedbuild"


def extlinux_conf(board: Board, kernel: str, fdt: str | None, initrd: str | None) -> str:
    """extlinux/extlinux.conf for the boot partition: what U-Boot's distro (standard)
    boot finds on the card and boots with no key pressed. Paths are from the partition's
    root; without ``fdt`` U-Boot passes the DTB it has itself (QEMU's)."""
    lines = [f"# embedbuild {board.name}: read by U-Boot's distro boot",
             f"default {EXTLINUX_LABEL}", "prompt 0", "timeout 0", "",
             f"label {EXTLINUX_LABEL}", f"\tkernel /{kernel}"]
    if fdt:
        lines.append(f"\tfdt /{fdt}")
    if initrd:
        lines.append(f"\tinitrd /{initrd}")
    if board.kernel.cmdline:
        lines.append(f"\tappend {board.kernel.cmdline}")
    return "\n".join(lines) + "\n"
