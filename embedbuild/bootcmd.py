"""U-Boot command lists: what embedbuild types at a board's U-Boot prompt.

The one place U-Boot command text is written. The build puts the TFTP boot
commands into manifest.json; the bench (rig/) only sends what it gets from here.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from embedbuild.fit import VERSION_PROP
from embedbuild.model.board import SLOTS, Board, Flash, Partition, UBoot

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


def flash_read_head(board: Board, part: Partition, length: int) -> list[str]:
    """Commands whose last prints the first ``length`` bytes of a partition as stored
    (md.b's hex dump; SPI NOR: read back to readback_addr first)."""
    flash = board.flash
    assert flash is not None
    at = flash_address(flash, part)
    if flash.dialect == "nor":
        return [f"md.b 0x{at:x} 0x{length:x}"]
    rb = flash.readback_addr
    return [f"sf read 0x{rb:x} 0x{at:x} 0x{length:x}", f"md.b 0x{rb:x} 0x{length:x}"]


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


# -- A/B slots ---------------------------------------------------------------------------

# Variables of the A/B boot (RAUC's names): the order slots are tried in, and each slot's
# boot attempts left. U-Boot's setexpr writes hexadecimal without "0x" and test reads
# numbers with base 0, so every comparison reads 0x${BOOT_x_LEFT}.
BOOT_ORDER = "BOOT_ORDER"
# The slot an update wrote that has not yet marked itself good (the system clears it).
BOOT_PENDING = "BOOT_PENDING"
SLOT_ARG = "embedbuild.slot"  # on the kernel command line: the slot booted
# Console lines of the boot script, for the host and for people.
AB_SAYS = "embedbuild A/B:"
# What U-Boot reads from its console at most per line (Debian's qemu_arm: CONFIG_SYS_CBSIZE
# 512), less what the U-Boot driver appends to read the status: every command typed to
# store the script stays below it.
LINE_MAX = 512 - 32


def left_var(slot: str) -> str:
    """The variable holding a slot's boot attempts left."""
    return f"BOOT_{slot}_LEFT"


def mtdparts(board: Board) -> str | None:
    """The kernel's ``mtdparts=`` argument listing the flash partitions (for a board whose
    device tree does not), read-only as declared, except an A/B board's environment, which
    the system rewrites to mark its slot good."""
    flash = board.flash
    if flash is None or flash.linux is None:
        return None
    parts = []
    for p in flash.partitions:
        ro = "ro" if p.read_only and not env_writable(flash, p) else ""
        parts.append(f"{_mem(p.size)}@{_mem(flash.linux.offset + p.offset)}({p.name}){ro}")
    return f"mtdparts={flash.linux.mtd}:{','.join(parts)}"


def _mem(n: int) -> str:
    """A size as the kernel's memparse reads it, short: 256k, 16m, or hexadecimal."""
    for unit, div in (("m", 1 << 20), ("k", 1 << 10)):
        if n and n % div == 0:
            return f"{n // div}{unit}"
    return f"0x{n:x}"


def env_writable(flash: Flash, part: Partition) -> bool:
    """Whether Linux may write this partition although embedbuild's flash never does: the
    environment of a board whose A/B boot is confirmed."""
    return (flash.ab is not None and flash.ab.confirmed and flash.env is not None
            and flash.env.partition == part.name)


def slot_bootargs(board: Board, slot: str) -> str:
    """The kernel command line of a slot boot: the board's, the slot booted, the panic
    timeout that turns a panic into a spent try, and the flash partitions."""
    ab = board.flash.ab if board.flash else None
    assert ab is not None
    words = [board.kernel.cmdline, f"{SLOT_ARG}={slot}", f"panic={ab.panic}", mtdparts(board)]
    return " ".join(w for w in words if w)


def ab_script(board: Board) -> dict[str, str]:
    """The A/B boot as U-Boot variables (name -> value), ``bootcmd`` running it unattended:

    - eb_ab_order: a BOOT_ORDER or counter not set at all (U-Boot's default environment
      after a damaged one) is set: "A B", the slot's tries; the slots in BOOT_ORDER's
      order, each once, then
      any slot it does not name (a BOOT_ORDER naming no slot, or one twice, still tries
      every slot: never a reset loop over nothing);
    - eb_ab_pick: the first of them with tries left whose image is intact (iminfo checks
      its header and hashes) loses one try (setexpr), the environment is saved and the
      slot booted; a slot whose kernel does not start lets the next one try;
    - eb_ab_check_A/B: whether a slot holds an intact image; eb_ab_boot_A/B: its command
      line and boot;
    - eb_ab_none, when nothing booted: no slot holds an image (a new board): the board's
      own boot (flash.ab.fallback); no tries left anywhere: every slot gets its tries
      again, saved, reset; tries left but nothing started: reset (the try is spent);
    - eb_ab: the three in turn.
    """
    flash = board.flash
    assert flash is not None and flash.ab is not None
    ab = flash.ab
    default_order = " ".join(SLOTS)
    order = [f'run eb_ab_clear; env exists {BOOT_ORDER} || setenv {BOOT_ORDER} "{default_order}";']
    order += [f" env exists {left_var(s)} || setenv {left_var(s)} {ab.tries};" for s in SLOTS]
    order.append(f" for s in ${{{BOOT_ORDER}}} {' '.join(SLOTS)}; do")
    pick = ["for s in ${eb_order}; do"]
    for s in SLOTS:
        order.append(f' if test "${{s}}" = {s} -a -z "${{eb_seen_{s}}}"; then'
                     f' setenv eb_seen_{s} 1; setenv eb_order "${{eb_order}} {s}"; fi;')
        var = left_var(s)
        pick.append(f' if test "${{s}}" = {s} -a 0x${{{var}}} -gt 0 && run eb_ab_check_{s};'
                    f" then setexpr {var} ${{{var}}} - 1; run eb_ab_boot_{s}; fi;")
    order.append(" done")
    pick.append(" done")
    # The script's own variables are cleared before each saveenv: only the state is kept.
    out = {"eb_ab_clear": "setenv eb_order; setenv eb_img; "
           + " ".join(f"setenv eb_seen_{s};" for s in SLOTS),
           "eb_ab_order": "".join(order), "eb_ab_pick": "".join(pick)}
    for s in SLOTS:
        part = flash.partition(ab.partition_of(s))
        boot = [c for c in flash_boot(board, part, part.size)
                if not c.startswith("setenv bootargs")]
        # The image as bootm will see it: mapped NOR in place, SPI NOR read to RAM first;
        # each command only if the one before succeeded (a failed read or rollback check
        # is no intact image). A script the boot stores (a signed board's version check,
        # at this slot's address) becomes a variable of the slot's own: quoted inside
        # another setenv it would break the quoting.
        check, own = [], {}
        for c in boot[:-1]:
            if m := _SETENV_SCRIPT.match(c):
                own[m.group(1)] = f"eb_ab_{m.group(1)}_{s}"
                out[own[m.group(1)]] = m.group(2)
            elif c.startswith("run ") and c[4:] in own:
                check.append(f"run {own[c[4:]]}")
            else:
                check.append(c)
        out[f"eb_ab_check_{s}"] = " && ".join(
            [*check, f"iminfo 0x{image_address(flash, part):x}"])
        out[f"eb_ab_boot_{s}"] = (
            f"run eb_ab_clear; saveenv; echo {AB_SAYS} booting slot {s}, ${{{left_var(s)}}}"
            " tries left;"
            f' setenv bootargs "{slot_bootargs(board, s)}"; {boot[-1]}')
    any_left = " -o ".join(f"0x${{{left_var(s)}}} -gt 0" for s in SLOTS)
    refill = " ".join(f"setenv {left_var(s)} {ab.tries};" for s in SLOTS)
    images = " ".join(f"run eb_ab_check_{s} && setenv eb_img 1;" for s in SLOTS)
    out["eb_ab_none"] = (
        f"{images} if test -z \"${{eb_img}}\"; then echo {AB_SAYS} no slot holds an image;"
        f" run eb_ab_clear; {ab.fallback}; else if test {any_left}; then echo {AB_SAYS} no"
        f" slot booted; else echo {AB_SAYS} no tries left: each slot gets {ab.tries} again;"
        f" {refill} fi; run eb_ab_clear; saveenv; reset; fi")
    out["eb_ab"] = "run eb_ab_order; run eb_ab_pick; run eb_ab_none"
    out["bootcmd"] = "run eb_ab"
    return out


# A boot command that stores a script: setenv NAME 'SCRIPT' (the script has no ').
_SETENV_SCRIPT = re.compile(r"^setenv (\w+) '([^']*)'$")


def image_address(flash: Flash, part: Partition) -> int:
    """Where bootm finds a slot's image: its mapped address, or for SPI NOR the RAM it is
    read back to."""
    if flash.dialect == "nor":
        return flash_address(flash, part)
    assert flash.readback_addr is not None
    return flash.readback_addr


def ab_default_bootcmd(board: Board) -> str:
    """The A/B boot as one command, for U-Boot's compiled-in default environment: a board
    whose saved environment is damaged (a power cut during saveenv) still boots a slot."""
    script = ab_script(board)
    return "; ".join([*(f"setenv {k} '{v}'" for k, v in script.items() if k != "bootcmd"),
                      script["bootcmd"]])


def ab_commands(board: Board, state: dict[str, str]) -> list[str]:
    """The U-Boot commands that store the A/B boot and ``state`` (BOOT_ORDER and counters)
    in the environment (saveenv last): the environment U-Boot runs, its own default one
    included, plus these variables."""
    cmds = [f"setenv {k} '{v}'" for k, v in {**ab_script(board), **state}.items()]
    for c in cmds:
        if len(c) >= LINE_MAX:
            raise ValueError(f"A/B command of {len(c)} bytes, over U-Boot's line limit: {c}")
    return [*cmds, "saveenv"]
