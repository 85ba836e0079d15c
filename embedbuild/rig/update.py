"""A/B updates: write an image to the slot that is not running and make U-Boot boot it
next, with its tries (board.toml [flash.ab]), leaving the running slot as the fallback.

Two ways, both checked at every step:

- through U-Boot on the serial console (as `embedbuild flash`): the environment read
  with printenv, the image written by the flash sequence (RAM copy checked, exactly the
  slot's erase blocks, read back), then the boot script and the new order and counters
  stored with setenv and saveenv, and read back;
- from the running system over SSH: the running slot from its kernel command line, the
  image copied and its sha256 checked on the device, the slot's MTD partition erased and
  written (flashcp), read back and hashed, the environment set with fw_setenv and read
  back with fw_printenv.

The order matters for a power cut: the slot is written completely and checked before the
environment names it, so until then U-Boot keeps booting the old slot.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedbuild import bootcmd
from embedbuild.model.board import SLOTS, Board, FlashAb, Partition
from embedbuild.rig.flash import FlashError, FlashJob, FlashReport, flash
from embedbuild.rig.resource import LanLink
from embedbuild.rig.uboot import UBootDriver
from embedbuild.slots import HEAD, AbState, image_size
from embedbuild.vboot.verify import Keyring

_VAR = re.compile(r"^([A-Za-z0-9_.:-]+)=(.*)$")
_MD = re.compile(r"^[0-9a-fA-F]{8}:((?: [0-9a-fA-F]{2})+)", re.M)
_CRC = re.compile(r"==>\s*([0-9a-fA-F]{8})")
_MTD = re.compile(r'^(mtd\d+): ([0-9a-f]+) ([0-9a-f]+) "([^"]*)"$', re.M)


class UpdateError(FlashError):
    """An update was refused, or a check during it failed."""


def check_board(board: Board) -> FlashAb:
    """The board's A/B slots, refused when it has none or their boot is not confirmed on
    the board's own U-Boot."""
    where = str(board.dir / "board.toml")
    ab = board.flash.ab if board.flash else None
    if ab is None:
        raise UpdateError(f"board {board.name} has no A/B slots", where=where,
                          hint="declare [flash.ab] (two slot partitions) and [flash.env]; or "
                          "write one image with `embedbuild flash`")
    if not ab.confirmed:
        raise UpdateError(
            f"the A/B boot of {board.name} is not confirmed on a real unit (flash.ab."
            "confirmed = false): its U-Boot may lack what the boot script uses, or reset "
            "the environment at boot", where=where,
            hint="on a unit: check the commands and that saveenv keeps a variable across a "
            "reset (README, A/B updates), then set confirmed = true")
    return ab


def slot_partition(board: Board, slot: str) -> Partition:
    """The partition of slot "A" or "B"."""
    flash = board.flash
    assert flash is not None and flash.ab is not None
    return flash.partition(flash.ab.partition_of(slot))


def refuse_running(board: Board, slot: str, in_use: str | None, how: str) -> None:
    """Writing the slot in use (the one that runs, or boots next) would leave no
    fallback."""
    if slot == in_use:
        other = next(s for s in SLOTS if s != slot)
        raise UpdateError(f"slot {slot} is the one {how} on {board.name}: writing it "
                          "would leave no slot to fall back to",
                          hint=f"write slot {other} (--slot auto)")


def parse_printenv(text: str) -> dict[str, str]:
    """Variables from printenv's (U-Boot) or fw_printenv's output: name=value lines."""
    return {m.group(1): m.group(2) for line in text.splitlines() if (m := _VAR.match(line))}


@dataclass(frozen=True)
class Update:
    """One update asked for.

    Args:
        board: the board.
        image: the image to write (a FIT or uImage, as `embedbuild flash` writes).
        slot: "A", "B", or "auto": the slot not in use.
        keyring: for a board that requires signed images ([signing]), the keys its
            U-Boot trusts (the result's keyring): the image must verify against them.
    """

    board: Board
    image: Path
    slot: str = "auto"
    keyring: Keyring | None = None

    def job(self, part: Partition) -> FlashJob:
        """The write of the image to ``part``, refused when the image does not fit it or,
        for a signed board, is not a FIT that verifies against the keyring (the same
        check as `embedbuild flash`)."""
        return FlashJob.prepare(self.board, part.name, self.image, self.keyring)

    def refuse_unfit(self) -> None:
        """Refuse, before anything is powered or written, an image the slot asked for
        (with auto: either slot) may not take: too large, or (signed board) not signed
        by the board's keys."""
        for s in SLOTS if self.slot == "auto" else [self.slot]:
            self.job(slot_partition(self.board, s))


@dataclass
class UpdateReport:
    """What an update did: the slot, the step times, the variables stored."""

    slot: str = ""
    partition: str = ""
    steps: dict[str, float] | None = None
    written: int = 0
    stored: dict[str, str] | None = None

    def lines(self) -> list[str]:
        out = [f"{name:28} {secs:6.2f} s" for name, secs in (self.steps or {}).items()]
        if self.written:
            out.append(f"wrote {self.written:,} bytes to slot {self.slot} ({self.partition})")
        if self.stored:
            out.append("stored " + ", ".join(f"{k}={v!r}" for k, v in self.stored.items()))
        return out


# -- through U-Boot ----------------------------------------------------------------------


def uboot_env(uboot: UBootDriver) -> dict[str, str]:
    """The environment U-Boot runs (its saved one, or its default after a bad crc)."""
    return parse_printenv(uboot.check("printenv", 30).output)


def update_uboot(uboot: UBootDriver, update: Update, link: LanLink,
                 report: UpdateReport) -> UpdateReport:
    """The update at a U-Boot prompt whose TFTP server serves the update's image."""
    board, asked = update.board, update.slot
    ab = check_board(board)
    t0 = time.monotonic()
    state = AbState.of(uboot_env(uboot))
    slot = state.target(asked)
    # Through U-Boot nothing says which slot ran last: the environment does (in_use).
    refuse_running(board, slot, state.in_use(), "U-Boot keeps to boot or fall back to")
    part = slot_partition(board, slot)
    report.slot, report.partition = slot, part.name
    report.steps = {"read environment": time.monotonic() - t0}
    job = update.job(part)
    done = flash(uboot, job, link, FlashReport(part.name))
    report.steps.update(done.steps)
    report.written = done.written
    t0 = time.monotonic()
    wanted = state.after_update(slot, ab)
    for cmd in bootcmd.ab_commands(board, wanted):
        uboot.check(cmd, 60)
    stored = uboot_env(uboot)
    script = bootcmd.ab_script(board)
    wrong = [k for k, v in {**script, **wanted}.items() if stored.get(k) != v]
    if wrong:
        raise UpdateError(f"U-Boot's environment does not hold what was stored: "
                          f"{', '.join(wrong)}", hint="check the board's U-Boot (saveenv)")
    report.steps["store boot order"] = time.monotonic() - t0
    report.stored = wanted
    return report


def uboot_images(uboot: UBootDriver, board: Board, built: bytes | None) -> dict[str, str]:
    """What each slot holds, read through U-Boot: the image's kind and size from its
    first bytes, its crc32 (and whether it is ``built``)."""
    out = {}
    for s in SLOTS:
        part = slot_partition(board, s)
        text = ""
        for cmd in bootcmd.flash_read_head(board, part, HEAD):
            text = uboot.check(cmd, 30).output
        head = bytes.fromhex("".join(m.group(1) for m in _MD.finditer(text)).replace(" ", ""))
        kind, size = image_size(head)
        crc = None
        if size and size <= part.size:
            for cmd in bootcmd.flash_range_crc(board, part, 0, size):
                text = uboot.check(cmd, 60).output
            m = _CRC.search(text)
            crc = int(m.group(1), 16) if m else None
        out[s] = describe_image(kind, size, crc, built)
    return out


def describe_image(kind: str, size: int, crc: int | None, built: bytes | None) -> str:
    """One slot's image in words: kind, size, crc32, and whether it is the build's."""
    if not size:
        return kind
    text = f"{kind}, {size:,} bytes"
    if crc is not None:
        text += f", crc32 {crc:08x}"
        if built is not None and len(built) == size and zlib.crc32(built) == crc:
            text += " (this build's image)"
    return text


def file_images(board: Board, flash_file: Path, built: bytes | None) -> dict[str, str]:
    """What each slot holds in a file of the board's whole flash."""
    out = {}
    with open(flash_file, "rb") as f:
        for s in SLOTS:
            part = slot_partition(board, s)
            f.seek(part.offset)
            kind, size = image_size(f.read(HEAD))
            crc = None
            if size and size <= part.size:
                f.seek(part.offset)
                crc = zlib.crc32(f.read(size))
            out[s] = describe_image(kind, size, crc, built)
    return out


# -- over SSH from the running system ------------------------------------------------------


@dataclass(frozen=True)
class Ssh:
    """Commands on the running system over SSH, each bounded in time.

    Args:
        host: the system's address.
        identity: the private key to log in with (None: ssh's own choice, e.g. an agent).
        wrap: turns the ssh command line into the one run (a network namespace's exec for
            a QEMU board's bench network).
    """

    host: str
    identity: Path | None = None
    wrap: Callable[[list[str]], list[str]] = lambda argv: argv

    def argv(self, command: str) -> list[str]:
        opts = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
        if self.identity is not None:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return self.wrap(["ssh", *opts, f"root@{self.host}", command])

    def run(self, command: str, timeout: float = 60, data: bytes | None = None,
            check: bool = True) -> str:
        """Run ``command`` on the system (``data`` on its stdin); returns its output."""
        try:
            p = subprocess.run(self.argv(command), input=data if data is not None else b"",
                               capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UpdateError(f"over SSH, `{command}` took more than {timeout:.0f} s",
                              where=self.host) from None
        if check and p.returncode != 0:
            err = (p.stderr or p.stdout).decode(errors="replace").strip()[-400:]
            raise UpdateError(f"over SSH, `{command}` failed (exit status {p.returncode}): "
                              f"{err}", where=self.host,
                              hint="check that the system runs and takes the key")
        return p.stdout.decode(errors="replace")


@dataclass(frozen=True)
class Running:
    """The running system as its update sees it: its slot, its MTD partitions by name
    (device, size), its environment."""

    slot: str | None
    mtd: dict[str, tuple[str, int]]
    env: dict[str, str]
    env_ok: bool


SEP = "@@eb@@"


def running(ssh: Ssh) -> Running:
    """Read the running system's slot, partitions and environment in one login."""
    out = ssh.run(f"cat /proc/cmdline; echo {SEP}; cat /proc/mtd; echo {SEP}; "
                  f"fw_printenv 2>&1; echo {SEP}$?")
    cmdline, mtd, rest = out.split(f"{SEP}\n", 2)
    env_text, _, status = rest.rpartition(SEP)
    slot = next((w.split("=", 1)[1] for w in cmdline.split()
                 if w.startswith(f"{bootcmd.SLOT_ARG}=")), None)
    parts = {m.group(4): (m.group(1), int(m.group(2), 16)) for m in _MTD.finditer(mtd)}
    env = parse_printenv(env_text)
    # fw_printenv falls back to a default (none here) on a bad crc, and says so.
    ok = status.strip() == "0" and "bootcmd" in env and "Cannot read environment" not in env_text
    return Running(slot if slot in SLOTS else None, parts, env, ok)


def ssh_images(ssh: Ssh, board: Board, now: Running, built: bytes | None) -> dict[str, str]:
    """What each slot holds, read by the running system from its MTD partitions: kind and
    size from the first bytes, then the image's sha256 (and whether it is ``built``)."""
    out = {}
    for s in SLOTS:
        part = slot_partition(board, s)
        if part.name not in now.mtd:
            out[s] = "not visible to the running system (/proc/mtd)"
            continue
        dev = now.mtd[part.name][0]
        head = base64.b64decode(ssh.run(f"head -c {HEAD} /dev/{dev} | base64"))
        kind, size = image_size(head)
        if not size or size > part.size:
            out[s] = kind
            continue
        digest = ssh.run(f"head -c {size} /dev/{dev} | sha256sum").split()[0]
        mine = built is not None and hashlib.sha256(built).hexdigest() == digest
        out[s] = f"{kind}, {size:,} bytes, sha256 {digest[:16]}" + \
            (" (this build's image)" if mine else "")
    return out


def update_ssh(ssh: Ssh, update: Update, report: UpdateReport) -> UpdateReport:
    """The update from the running system (booted from a slot) over SSH."""
    board, image, asked = update.board, update.image, update.slot
    ab = check_board(board)
    steps: dict[str, float] = {}
    report.steps = steps
    t0 = time.monotonic()
    now = running(ssh)
    if now.slot is None:
        raise UpdateError(f"the system at {ssh.host} was not booted from an A/B slot (no "
                          f"{bootcmd.SLOT_ARG}= on its command line): it cannot tell which "
                          "slot is in use", hint="update through U-Boot (--via uboot)")
    if not now.env_ok:
        raise UpdateError(f"the system at {ssh.host} cannot read U-Boot's environment "
                          "(fw_printenv): writing it would drop U-Boot's own variables",
                          hint="update through U-Boot once (--via uboot): it saves its "
                          "environment whole")
    state = AbState.of(now.env)
    slot = state.target(asked) if asked != "auto" else next(s for s in SLOTS if s != now.slot)
    refuse_running(board, slot, now.slot, "that runs")
    part = slot_partition(board, slot)
    report.slot, report.partition = slot, part.name
    if part.name not in now.mtd:
        raise UpdateError(f"the system at {ssh.host} has no MTD partition {part.name!r} "
                          f"(/proc/mtd: {', '.join(now.mtd) or 'none'})",
                          hint="its kernel needs the board's MTD options and partitions")
    dev, size = now.mtd[part.name]
    data = update.job(part).data
    if size != part.size:
        raise UpdateError(f"/dev/{dev} ({part.name}) is {size:,} bytes on the device, "
                          f"{part.size:,} in board.toml: not written",
                          hint="the device runs another layout; update through U-Boot")
    digest = hashlib.sha256(data).hexdigest()
    steps["read running system"] = time.monotonic() - t0
    t0 = time.monotonic()
    tmp = "/tmp/embedbuild-update.img"
    ssh.run(f"cat > {tmp}", timeout=60 + len(data) / 2**18, data=data)
    got = ssh.run(f"sha256sum {tmp}").split()[0]
    if got != digest:
        raise UpdateError(f"the copy on the device has sha256 {got}, the image {digest}: "
                          f"slot {slot} not touched", where=str(image))
    steps["copy"] = time.monotonic() - t0
    t0 = time.monotonic()
    ssh.run(f"flash_eraseall -q /dev/{dev} && flashcp {tmp} /dev/{dev}",
            timeout=120 + 30 * part.size / 2**20)
    steps["erase and write"] = time.monotonic() - t0
    t0 = time.monotonic()
    back = ssh.run(f"head -c {len(data)} /dev/{dev} | sha256sum; rm -f {tmp}").split()[0]
    if back != digest:
        raise UpdateError(f"slot {slot} ({part.name}) reads back sha256 {back}, the image "
                          f"{digest}: the write did not land",
                          hint="the slot holds a damaged image; the environment still boots "
                          "the running slot; update again")
    steps["read back"] = time.monotonic() - t0
    report.written = len(data)
    t0 = time.monotonic()
    wanted = {**bootcmd.ab_script(board), **state.after_update(slot, ab)}
    lines = "".join(f"{k}={v}\n" for k, v in wanted.items())
    ssh.run("fw_setenv -s -", data=lines.encode())
    stored = parse_printenv(ssh.run("fw_printenv " + " ".join(shlex.quote(k) for k in wanted)))
    wrong = [k for k, v in wanted.items() if stored.get(k) != v]
    if wrong:
        raise UpdateError(f"U-Boot's environment does not hold what was stored: "
                          f"{', '.join(wrong)}")
    steps["store boot order"] = time.monotonic() - t0
    report.stored = state.after_update(slot, ab)
    return report
