"""Reproducible newc cpio archives, the format the kernel unpacks as initramfs.

Entries are sorted by path, owned by 0:0, dated 0 and numbered from 1, so the
same entries always give the same bytes. Segments can be concatenated (each
one ends with its own TRAILER!!!) and compressed alone.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, Literal

Kind = Literal["file", "dir", "symlink", "char", "block", "fifo"]
_TYPE = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


@dataclass(frozen=True)
class Entry:
    """One archive member. ``path`` is relative to the root (no leading slash)."""

    path: str
    kind: Kind
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    major: int = 0
    minor: int = 0
    uid: int = 0
    gid: int = 0

    def payload(self) -> bytes:
        if self.kind == "file":
            return self.data
        if self.kind == "symlink":
            return self.target.encode()
        return b""


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(
    ino: int,
    mode: int,
    uid: int,
    gid: int,
    nlink: int,
    size: int,
    rmajor: int,
    rminor: int,
    name: bytes,
) -> bytes:
    fields = (ino, mode, uid, gid, nlink, 0, size, 0, 0, rmajor, rminor, len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def write_newc(entries: Iterable[Entry], out: BinaryIO) -> None:
    """Write entries as one newc archive, sorted by path, ending with TRAILER!!!."""
    ordered = sorted(entries, key=lambda e: e.path)
    seen = set()
    for ino, e in enumerate(ordered, 1):
        if e.path in seen:
            raise ValueError(f"duplicate cpio entry {e.path}")
        seen.add(e.path)
        name = e.path.strip("/").encode()
        data = e.payload()
        mode = _TYPE[e.kind] | (e.mode & 0o7777)
        nlink = 2 if e.kind == "dir" else 1
        hdr = _header(ino, mode, e.uid, e.gid, nlink, len(data), e.major, e.minor, name)
        out.write(hdr + name + b"\0" + _pad(len(hdr) + len(name) + 1))
        out.write(data + _pad(len(data)))
    name = b"TRAILER!!!"
    hdr = _header(0, 0, 0, 0, 1, 0, 0, 0, name)
    out.write(hdr + name + b"\0" + _pad(len(hdr) + len(name) + 1))


def read_newc(data: bytes) -> list[Entry]:
    """Entries of one or more concatenated (uncompressed) newc archives."""
    out = []
    pos = 0
    while pos + 110 <= len(data):
        if data[pos : pos + 6] != b"070701":
            if data[pos] == 0:  # padding between archives
                pos += 1
                continue
            raise ValueError(f"not a newc header at offset {pos}")
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, size, rmaj, rmin, namesize = f[1], f[2], f[3], f[6], f[9], f[10], f[11]
        name_at = pos + 110
        name = data[name_at : name_at + namesize - 1].decode()
        body = name_at + namesize + (-(110 + namesize) % 4)
        payload = data[body : body + size]
        pos = body + size + (-size % 4)
        if name == "TRAILER!!!":
            continue
        kind = next(k for k, t in _TYPE.items() if stat.S_IFMT(mode) == t)
        out.append(Entry(name, kind, mode & 0o7777,
                         data=payload if kind == "file" else b"",
                         target=payload.decode() if kind == "symlink" else "",
                         major=rmaj, minor=rmin, uid=uid, gid=gid))
    return out
