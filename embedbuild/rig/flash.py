"""Writing an image to a flash partition through U-Boot, with the checks no careful
person would skip: the request is refused before anything is sent when it cannot be
right; the RAM copy is checked (size and crc32) before the erase; exactly the
partition's erase blocks are erased; the written bytes are read back and compared, and
the rest of the partition must read erased. Command text comes from embedbuild.bootcmd.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from embedbuild import bootcmd
from embedbuild.bounded import FetchError, TooLarge, read_file
from embedbuild.errors import EmbedbuildError
from embedbuild.manifest import Manifest
from embedbuild.model.board import Board, Partition
from embedbuild.rig.resource import LanLink
from embedbuild.rig.uboot import BootError, UBootDriver
from embedbuild.vboot.gate import require_signed
from embedbuild.vboot.verify import Keyring

_CRC = re.compile(r"==>\s*([0-9a-fA-F]{8})")
_FILESIZE = re.compile(r"filesize=([0-9a-fA-F]+)")
# cmp.b: "byte at 0x41000010 (0x0) != byte at 0x04040010 (0xab)"
_DIFFER = re.compile(r"!=\s*\w+ at (?:0x)?([0-9a-fA-F]+)")


class FlashError(EmbedbuildError):
    """A flash request was refused, or a check during the flash failed."""


def writable_partition(board: Board, name: str) -> Partition:
    """The partition ``name``, refused unless embedbuild may write it."""
    where = str(board.dir / "board.toml")
    if board.flash is None:
        raise FlashError(f"board {board.name} has no [flash]", where=where,
                         hint="declare its flash layout and dialect in board.toml")
    names = [p.name for p in board.flash.partitions]
    if name not in names:
        raise FlashError(f"unknown partition {name!r} for {board.name}", where=where,
                         hint=f"known partitions: {', '.join(names)}")
    part = board.flash.partition(name)
    if part.read_only:
        raise FlashError(
            f"partition {name!r} of {board.name} is read-only (bootloader, environment, "
            "calibration or boot-select data): embedbuild never writes it", where=where,
            hint=f"the firmware goes to --partition {board.flash.firmware}")
    return part


def built_image(board: Board, result: Path) -> Path:
    """The file of a build result that goes to the firmware partition."""
    name = Manifest.read(result).flash_image
    if name is None:
        raise FlashError(f"board {board.name} builds no single-file flash image",
                         hint="package it as a uImage or a FIT ([kernel.fit]), or give "
                         "--image FILE")
    return result / name


def check_image(part: Partition, image: Path) -> bytes:
    """The image's bytes, refused when they do not fit the partition."""
    # Read bounded: a regular file of at most the partition's size (never a device).
    try:
        data = read_file(image, limit=part.size, follow_symlinks=True)
    except TooLarge:
        size = image.stat().st_size
        raise FlashError(
            f"image is {size:,} bytes, {size - part.size:,} more than partition "
            f"{part.name!r} ({part.size:,} bytes)", where=str(image),
            hint="shrink the image; `embedbuild size BOARD` shows where the bytes go") from None
    except FetchError as e:
        raise FlashError(f"cannot read image: {e.message}", where=str(image)) from None
    if not data:
        raise FlashError("image is empty", where=str(image))
    return data


@dataclass(frozen=True)
class FlashJob:
    """One image to write to one partition, refused when it cannot be right.

    Args:
        board: the board.
        part: the partition written.
        image: the image file.
        data: its bytes.
        filename: the name the TFTP server serves it under.
    """

    board: Board
    part: Partition
    image: Path
    data: bytes
    filename: str

    @classmethod
    def prepare(cls, board: Board, partition: str, image: Path,
                keyring: Keyring | None = None) -> FlashJob:
        """The job of writing ``image`` to ``partition``, refused unless that partition
        may be written and the image fits it; for a board that requires signed images
        ([signing]), also unless it is a FIT that verifies against ``keyring`` (what the
        board's U-Boot trusts: the result's keyring)."""
        part = writable_partition(board, partition)
        data = check_image(part, image)
        if board.signing is not None:
            if keyring is None:
                raise FlashError(f"board {board.name} requires signed images, and no "
                                 "keyring was given to check this one against",
                                 where=str(image), hint="flash through `embedbuild flash`, "
                                 "which builds the board's keyring")
            require_signed(image, keyring, bootcmd.FIT_CONFIG, board.name)
        return cls(board, part, image, data, image.name)

    def sequence(self, link: LanLink | None) -> list[bootcmd.FlashCommand]:
        """Every command a flash sends, in order, with the checks made on their output
        (without ``link``, the network commands name placeholders: what --dry-run
        prints for a real board whose addresses were not given)."""
        net = bootcmd.network(self.board.uboot, link)
        return ([bootcmd.FlashCommand(c, "network") for c in net]
                + bootcmd.flash_write(self.board, self.part, self.filename, len(self.data),
                                      zlib.crc32(self.data)))


@dataclass
class FlashReport:
    """What a flash did: seconds per step, bytes written."""

    partition: str
    steps: dict[str, float] = field(default_factory=dict)
    written: int = 0

    def lines(self) -> list[str]:
        out = [f"{name:28} {secs:6.2f} s" for name, secs in self.steps.items()]
        if self.written and (secs := self.steps.get("write")):
            out.append(f"wrote {self.written:,} bytes to {self.partition} "
                       f"({self.written / 2**20 / secs:.2f} MiB/s)")
        return out


def _timeout(cmd: bootcmd.FlashCommand, part: Partition) -> float:
    # Real SPI NOR erases and programs at well under 1 MiB/s; be generous, a hang still ends.
    if cmd.step in ("erase", "write", "read back", "check erased rest", "load"):
        return 60 + 30 * part.size / 2**20
    return 30


def flash(uboot: UBootDriver, job: FlashJob, link: LanLink,
          report: FlashReport) -> FlashReport:
    """Run the flash sequence at a U-Boot prompt whose TFTP server serves the job's file;
    every check failing raises FlashError saying whether the flash was touched."""
    part = job.part
    erased = False
    for cmd in job.sequence(link):
        erased = erased or cmd.step == "erase"
        try:
            r = uboot.check(cmd.text, _timeout(cmd, part))
        except BootError as e:
            state = (f"partition {part.name!r} is left erased or partly written" if erased
                     else "nothing was erased")
            raise FlashError(f"{e.message}: {state}", log_tail=e.log_tail) from None
        report.steps[cmd.step] = report.steps.get(cmd.step, 0.0) + r.seconds
        if cmd.expect == "filesize":
            m = _FILESIZE.search(r.output)
            got = int(m.group(1), 16) if m else -1
            if got != cmd.value:
                raise FlashError(
                    f"U-Boot loaded {got:,} bytes of {job.filename}, the image is "
                    f"{cmd.value:,} (short or wrong load): aborted before erasing "
                    f"{part.name!r}, nothing was erased", where=str(job.image),
                    hint="check the TFTP server and the link")
        elif cmd.expect == "crc32":
            m = _CRC.search(r.output)
            got = int(m.group(1), 16) if m else -1
            if got != cmd.value:
                _mismatch(uboot, job, cmd, got)
    report.written = len(job.data)  # only now: every check passed
    return report


def _mismatch(uboot: UBootDriver, job: FlashJob, cmd: bootcmd.FlashCommand, got: int) -> None:
    """A crc32 differed: say where, and whether the flash was touched."""
    board, part, size, image = job.board, job.part, len(job.data), job.image
    if cmd.step == "check RAM copy":
        raise FlashError(
            f"the copy U-Boot loaded has crc32 {got:08x}, the image {cmd.value:08x}: aborted "
            f"before erasing {part.name!r}, nothing was erased", where=str(image),
            hint="the bytes served differ from the image (TFTP server, link or RAM)")
    if cmd.step == "read back":
        flash = board.flash
        assert flash is not None
        r = uboot.run(bootcmd.flash_compare(board, part, size), 60 + 30 * size / 2**20)
        at = ""
        if m := _DIFFER.search(r.output):
            # cmp.b names the address on the flash side: mapped flash, or the SPI copy.
            base = (bootcmd.flash_address(flash, part) if flash.dialect == "nor"
                    else flash.readback_addr or 0)
            offset = int(m.group(1), 16) - base
            at = f" first at offset 0x{offset:x}"
            if flash.dialect == "nor":
                at += f" (address 0x{base + offset:08x})"
        raise FlashError(
            f"partition {part.name!r}: read-back differs from the image{at} (crc32 "
            f"{got:08x}, expected {cmd.value:08x}): the write did not land",
            hint="the partition holds a damaged image: do not boot it; flash again, and "
            "if it fails again the flash (or its emulation) is faulty")
    # The rest of the partition: find the first erase block that is not erased.
    flash = board.flash
    assert flash is not None
    block = flash.erase_block
    start = size
    while start < part.size:
        length = min(block - start % block, part.size - start)
        out = ""
        for text in bootcmd.flash_range_crc(board, part, start, length):
            out = uboot.check(text, 60).output
        m = _CRC.search(out)
        if not m or int(m.group(1), 16) != bootcmd.erased_crc(length):
            break
        start += length
    raise FlashError(
        f"partition {part.name!r}: not erased after the image, first in the erase block "
        f"at offset 0x{start - start % block:x} (crc32 {got:08x}, expected {cmd.value:08x})",
        hint="the erase did not take: do not boot it; flash again")


def set_bootcmd(uboot: UBootDriver, job: FlashJob, report: FlashReport) -> None:
    """Store a bootcmd that boots the job's partition unattended (saveenv)."""
    t0 = time.monotonic()
    for text in bootcmd.set_bootcmd(job.board, job.part, len(job.data)):
        uboot.check(text, 60)
    report.steps["set bootcmd"] = time.monotonic() - t0


def check_set_bootcmd(board: Board) -> None:
    """Refuse --set-bootcmd unless the board declares its environment writable by saveenv."""
    if board.flash is None or board.flash.env_partition() is None:
        raise FlashError(
            f"board {board.name} declares no U-Boot environment partition that saveenv may "
            "write", where=str(board.dir / "board.toml"),
            hint="boot it with `embedbuild boot BOARD --from-flash`, or mark the environment "
            "partition saveenv = true if its U-Boot keeps a saved bootcmd")
