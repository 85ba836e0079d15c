"""Legacy U-Boot image (uImage) headers: parse them back and verify what mkimage wrote."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import StepError

MAGIC = 0x27051956
HEADER = struct.Struct(">IIIIIIIBBBB32s")
# include/image.h
ARCH = {2: "arm", 5: "mips", 22: "arm64"}
COMP = {0: "none", 1: "gzip", 2: "bzip2", 3: "lzma", 4: "lzo", 5: "lz4", 6: "zstd"}
TYPE = {2: "kernel", 3: "ramdisk", 4: "multi", 5: "firmware", 6: "script"}


@dataclass(frozen=True)
class UImageHeader:
    """The fields of a legacy uImage header."""

    size: int
    load: int
    entry: int
    arch: str
    type: str
    compression: str
    name: str
    header_crc_ok: bool
    data_crc_ok: bool


def parse(data: bytes) -> UImageHeader:
    """Parse a uImage (header and payload); CRCs are checked, not trusted."""
    if len(data) < HEADER.size:
        raise StepError("uImage shorter than its 64-byte header")
    (magic, hcrc, _time, size, load, entry, dcrc, _os, arch, typ, comp,
     name) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StepError(f"not a uImage: magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
    header = bytearray(data[: HEADER.size])
    header[4:8] = b"\0\0\0\0"
    payload = data[HEADER.size : HEADER.size + size]
    return UImageHeader(
        size=size, load=load, entry=entry,
        arch=ARCH.get(arch, f"arch-{arch}"), type=TYPE.get(typ, f"type-{typ}"),
        compression=COMP.get(comp, f"comp-{comp}"),
        name=name.rstrip(b"\0").decode(errors="replace"),
        header_crc_ok=zlib.crc32(bytes(header)) == hcrc,
        data_crc_ok=len(payload) == size and zlib.crc32(payload) == dcrc,
    )


def verify(path: Path, *, arch: str, compression: str, load: int, entry: int) -> UImageHeader:
    """Parse a uImage back and check every field embedbuild asked mkimage for."""
    h = parse(path.read_bytes())
    problems = []
    if not h.header_crc_ok:
        problems.append("header CRC does not match")
    if not h.data_crc_ok:
        problems.append("data CRC does not match (or the file is truncated)")
    for what, got, want in (("arch", h.arch, arch), ("compression", h.compression, compression),
                            ("type", h.type, "kernel")):
        if got != want:
            problems.append(f"{what} is {got}, expected {want}")
    for what, got, want in (("load", h.load, load), ("entry", h.entry, entry)):
        if got != want:
            problems.append(f"{what} address is 0x{got:08x}, expected 0x{want:08x}")
    if problems:
        raise StepError(f"{path.name} failed verification: " + "; ".join(problems))
    return h
