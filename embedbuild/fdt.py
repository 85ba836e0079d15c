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
