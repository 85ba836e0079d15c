"""Flattened device trees (DTB): the nodes and their compatible strings, read in Python."""

from __future__ import annotations

import struct
from dataclasses import dataclass

FDT_MAGIC = 0xD00DFEED
BEGIN_NODE, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9


@dataclass(frozen=True)
class Node:
    """A device tree node: its full path and the properties embedbuild checks."""

    path: str
    compatible: tuple[str, ...]
    status: str


def strings(blob: bytes) -> list[str]:
    """A string-list property's values."""
    return [s.decode(errors="replace") for s in blob.rstrip(b"\0").split(b"\0") if s]


def tree(dtb: bytes) -> dict[str, dict[str, bytes]]:
    """Every node of a DTB by full path ("/", "/images/kernel-1"), with its raw
    properties."""
    magic, _total, off_struct, off_strings = struct.unpack_from(">IIII", dtb)
    if magic != FDT_MAGIC:
        raise ValueError("not a flattened device tree (bad magic)")
    pos = off_struct
    stack: list[str] = []
    props: list[dict[str, bytes]] = []
    out: dict[str, dict[str, bytes]] = {}
    while True:
        (tok,) = struct.unpack_from(">I", dtb, pos)
        pos += 4
        if tok == BEGIN_NODE:
            end = dtb.index(b"\0", pos)
            stack.append(dtb[pos:end].decode())
            props.append({})
            pos = (end + 4) & ~3
        elif tok == PROP:
            length, nameoff = struct.unpack_from(">II", dtb, pos)
            pos += 8
            name_end = dtb.index(b"\0", off_strings + nameoff)
            name = dtb[off_strings + nameoff : name_end].decode()
            props[-1][name] = dtb[pos : pos + length]
            pos = (pos + length + 3) & ~3
        elif tok == END_NODE:
            out["/" + "/".join(stack[1:])] = props.pop()
            stack.pop()
        elif tok == NOP:
            continue
        elif tok == END:
            return out
        else:
            raise ValueError(f"bad token 0x{tok:x} in device tree structure")


def string(value: bytes) -> str:
    """A string property's value."""
    return value.rstrip(b"\0").decode(errors="replace")


def cells(value: bytes) -> int:
    """A one- or two-cell number property's value."""
    return int.from_bytes(value, "big")


def nodes(dtb: bytes) -> list[Node]:
    """Every node of a DTB, sorted by path."""
    out = []
    for path, p in tree(dtb).items():
        status = strings(p.get("status", b"okay"))
        out.append(Node(path, tuple(strings(p.get("compatible", b""))),
                        status[0] if status else "okay"))
    return sorted(out, key=lambda n: n.path)


# -- the structure block tag by tag (what verified boot hashes) ------------------------


@dataclass(frozen=True)
class Header:
    """A DTB's header fields that locate its blocks (all offsets from the blob's start)."""

    totalsize: int
    off_struct: int
    off_strings: int
    size_strings: int
    size_struct: int


@dataclass(frozen=True)
class Tag:
    """One token of the structure block.

    Args:
        kind: BEGIN_NODE, END_NODE, PROP, NOP or END.
        offset: where it starts, from the start of the structure block.
        end: where the next token starts (same origin).
        name: the node's name (BEGIN_NODE) or the property's name (PROP), else "".
        value: the property's value (PROP), else b"".
    """

    kind: int
    offset: int
    end: int
    name: str = ""
    value: bytes = b""


def header(dtb: bytes) -> Header:
    """The header of a DTB (version 17), its blocks checked to lie inside the blob."""
    if len(dtb) < 40:
        raise ValueError("not a flattened device tree (shorter than its header)")
    (magic, total, off_struct, off_strings, _rsv, version, _last, _cpu, size_strings,
     size_struct) = struct.unpack_from(">10I", dtb)
    if magic != FDT_MAGIC:
        raise ValueError("not a flattened device tree (bad magic)")
    if version < 17:
        raise ValueError(f"device tree version {version}: 17 is needed (dtc, mkimage write it)")
    if total > len(dtb):
        raise ValueError(f"truncated: the header says {total} bytes, the file has {len(dtb)}")
    for what, off, size in (("structure", off_struct, size_struct),
                            ("strings", off_strings, size_strings)):
        if off + size > total:
            raise ValueError(f"the {what} block ends past the tree's end")
    return Header(total, off_struct, off_strings, size_strings, size_struct)


def tags(dtb: bytes) -> list[Tag]:
    """Every token of the structure block in order, the last one END; bounds-checked, so
    a damaged or hostile blob raises ValueError instead of reading past a block."""
    h = header(dtb)
    base, limit = h.off_struct, h.off_struct + h.size_struct
    out: list[Tag] = []
    pos = 0

    def cstring(start: int, stop: int, what: str) -> str:
        end = dtb.find(b"\0", start, stop)
        if end < 0:
            raise ValueError(f"unterminated {what} at structure offset 0x{pos:x}")
        return dtb[start:end].decode(errors="replace")

    while True:
        if base + pos + 4 > limit:
            raise ValueError("the structure block ends without an END token")
        (kind,) = struct.unpack_from(">I", dtb, base + pos)
        if kind == BEGIN_NODE:
            name = cstring(base + pos + 4, limit, "node name")
            end = (pos + 4 + len(name.encode()) + 1 + 3) & ~3
            out.append(Tag(kind, pos, end, name))
        elif kind == PROP:
            if base + pos + 12 > limit:
                raise ValueError(f"property header past the structure block at 0x{pos:x}")
            length, nameoff = struct.unpack_from(">II", dtb, base + pos + 4)
            if base + pos + 12 + length > limit or nameoff >= h.size_strings:
                raise ValueError(f"property at structure offset 0x{pos:x} points outside "
                                 "its block")
            name = cstring(h.off_strings + nameoff, h.off_strings + h.size_strings,
                           "property name")
            value = dtb[base + pos + 12 : base + pos + 12 + length]
            out.append(Tag(kind, pos, (pos + 12 + length + 3) & ~3, name, value))
        elif kind in (END_NODE, NOP, END):
            out.append(Tag(kind, pos, pos + 4))
        else:
            raise ValueError(f"bad token 0x{kind:x} at structure offset 0x{pos:x}")
        if kind == END:
            return out
        pos = out[-1].end
