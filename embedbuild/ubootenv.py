"""U-Boot's saved environment as bytes, read by the host, e.g. from a QEMU board's flash
file or a dump of a real board's flash.

A non-redundant environment of CONFIG_ENV_SIZE bytes is a crc32 (zlib's, stored in the
CPU's byte order) of everything after it, then ``name=value`` strings each ended by a
NUL, an empty string after the last, and filler up to the end (U-Boot writes NULs,
mkenvimage 0xff; the crc covers it either way). When the crc does not match, U-Boot
takes its compiled-in default environment instead ("bad CRC, using default
environment"), as does :func:`parse` by saying so.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.model.board import Board, FlashEnv

HEADER = 4  # the crc32


class EnvError(EmbedbuildError):
    """An environment cannot be read: too short, or its place or file unknown."""


@dataclass(frozen=True)
class Env:
    """An environment as read back.

    Args:
        valid: its crc32 matched (else U-Boot runs its default environment).
        variables: name -> value, in the order stored (empty when not valid).
        stored_crc: the crc32 it carries.
    """

    valid: bool
    variables: dict[str, str]
    stored_crc: int

    @property
    def erased(self) -> bool:
        """Never written: an erased flash reads 0xff, whose crc is 0xffffffff."""
        return not self.valid and self.stored_crc == 0xFFFFFFFF


def _order(big_endian: bool) -> str:
    return ">I" if big_endian else "<I"


def parse(blob: bytes, big_endian: bool = False) -> Env:
    """The environment in ``blob`` (exactly CONFIG_ENV_SIZE bytes)."""
    if len(blob) <= HEADER:
        raise EnvError(f"an environment of {len(blob)} bytes holds nothing")
    (stored,) = struct.unpack(_order(big_endian), blob[:HEADER])
    data = blob[HEADER:]
    if zlib.crc32(data) != stored:
        return Env(False, {}, stored)
    variables: dict[str, str] = {}
    for entry in data.split(b"\0"):
        if not entry:  # the empty string after the last variable
            break
        name, sep, value = entry.partition(b"=")
        if sep:
            variables[name.decode("utf-8", "surrogateescape")] = \
                value.decode("utf-8", "surrogateescape")
    return Env(True, variables, stored)


def location(board: Board) -> tuple[int, FlashEnv]:
    """(offset in the flash, geometry) of the board's environment."""
    flash = board.flash
    if flash is None or flash.env is None:
        raise EnvError(f"board {board.name} does not say where U-Boot keeps its environment",
                       where=str(board.dir / "board.toml"),
                       hint="declare [flash.env] (partition, size, sector)")
    return flash.partition(flash.env.partition).offset + flash.env.offset, flash.env


def read_flash(board: Board, flash_file: Path) -> Env:
    """The environment in a file holding the board's whole flash (a QEMU board's pflash,
    or a dump of a real one)."""
    offset, env = location(board)
    try:
        with open(flash_file, "rb") as f:
            f.seek(offset)
            blob = f.read(env.size)
    except OSError as e:
        raise EnvError(f"cannot read the flash file: {e.strerror}", where=str(flash_file)) \
            from None
    if len(blob) != env.size:
        raise EnvError(f"the flash file ends before the environment (0x{offset:x} + "
                       f"0x{env.size:x})", where=str(flash_file),
                       hint="give a file holding the whole flash")
    return parse(blob, board.big_endian)

