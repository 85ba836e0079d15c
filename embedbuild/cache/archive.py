"""Store items as reproducible archives: GNU tar (names sorted, times, owners and hard
links dropped) compressed with zstd, and the checked way back into a folder.

Packing the same item twice gives the same bytes, so an archive's sha256 names it.
Unpacking trusts nothing in the archive. The tar stream is read here, header by header
(only what `pack` writes: files, folders, symlinks, GNU long names), never by a general
tar reader, and the decompressed bytes are capped at what the description allows: a
zstd bomb stops at the described sizes. Every entry must be one the (already
validated) description lists, with its type, mode and, for files, size and sha256;
every parent must be a folder already unpacked; nothing may be missing.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import subprocess
from pathlib import Path
from typing import BinaryIO

from embedbuild.cache.description import SUFFIX

COMPRESSION = "zstd"
__all__ = ["COMPRESSION", "SUFFIX", "ArchiveError", "pack", "stream_limit", "unpack"]
BLOCK = 512
CHUNK = 1 << 20


class ArchiveError(Exception):
    """The archive does not hold what its description says (the reason, in words)."""


def pack(item: Path, dest: Path) -> None:
    """Write item's tree to dest as a reproducible tar.zst."""
    with open(dest, "wb") as out:
        tar = subprocess.Popen(
            ["tar", "--create", "--format=gnu", "--sort=name", "--mtime=@0", "--owner=0",
             "--group=0", "--numeric-owner", "--hard-dereference", "-C", str(item), "."],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # -T0: one thread per core; level 3 packs a kernel tree at disk speed.
        z = subprocess.run(["zstd", "-q", "-T0", "-3", "-c"], stdin=tar.stdout, stdout=out,
                           stderr=subprocess.PIPE)
        tar.stdout.close()
        err = tar.stderr.read().decode(errors="replace")
        if tar.wait() != 0 or z.returncode != 0:
            raise OSError(f"packing {item.name} failed: {err.strip() or z.stderr.decode()}")


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def stream_limit(files: dict[str, dict]) -> int:
    """The most bytes a tar of these entries can take, as `pack` writes it: per entry a
    header, GNU long-name and long-link records, the data padded to blocks; then the end
    blocks and the padding to tar's 10 KiB records."""
    total = 0
    for rel, e in files.items():
        total += 3 * BLOCK + _padded(len(rel) + 4) + _padded(len(e.get("link", "")) + 1)
        total += _padded(e.get("size", 0))
    return total + 2 * BLOCK + 20 * BLOCK


class _Capped:
    """The decompressed stream, refused past ``limit`` bytes."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self.raw, self.limit, self.done = raw, limit, 0

    def read(self, n: int) -> bytes:
        data = self.raw.read(min(n, self.limit - self.done + 1))
        self.done += len(data)
        if self.done > self.limit:
            raise ArchiveError(f"it unpacks to more than the {self.limit:,} bytes its "
                               "description allows: not unpacked further")
        return data

    def exactly(self, n: int, what: str) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise ArchiveError(f"it ends inside {what} (truncated)")
        return data


def _number(field: bytes, what: str) -> int:
    """A tar header number: octal text, or GNU's base-256 for large values."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise ArchiveError(f"a tar header's {what} is not a number") from None


def _checksum_ok(header: bytes) -> bool:
    want = _number(header[148:156], "checksum")
    body = header[:148] + b" " * 8 + header[156:]
    return want in (sum(body), sum(b - 256 if b > 127 else b for b in body))


def _text(data: bytes, what: str) -> str:
    try:
        return data.split(b"\0", 1)[0].decode()
    except UnicodeDecodeError:
        raise ArchiveError(f"a {what} in the archive is not UTF-8") from None


def _entries(src: _Capped, max_long: int):
    """(kind, name, mode, size, link) per entry; the caller reads each file's data."""
    long_name = long_link = None
    while True:
        header = src.read(BLOCK)
        if not header or header == bytes(BLOCK):
            if len(header) not in (0, BLOCK):
                raise ArchiveError("it ends inside a header (truncated)")
            break
        if len(header) != BLOCK:
            raise ArchiveError("it ends inside a header (truncated)")
        if not _checksum_ok(header):
            raise ArchiveError("a tar header's checksum is wrong (damaged archive)")
        flag = header[156:157]
        size = _number(header[124:136], "size")
        if flag in (b"L", b"K"):
            if size > max_long:
                raise ArchiveError(f"a long name of {size:,} bytes, longer than any the "
                                   "description holds")
            text = _text(src.exactly(_padded(size), "a long name")[:size], "long name")
            if flag == b"L":
                long_name = text
            else:
                long_link = text
            continue
        kind = {b"0": "file", b"\0": "file", b"5": "dir", b"2": "symlink"}.get(flag)
        if kind is None:
            raise ArchiveError(f"an entry of tar type {flag!r}, which pack never writes")
        name = long_name if long_name is not None else _text(header[:100], "name")
        link = long_link if long_link is not None else _text(header[157:257], "link")
        long_name = long_link = None
        yield kind, name, _number(header[100:108], "mode"), size, link
    # What follows the end is padding: zeros only.
    while rest := src.read(CHUNK):
        if rest.count(0) != len(rest):
            raise ArchiveError("data after the end of the archive")


def _rel(name: str, kind: str) -> str:
    """The entry's path relative to the item, as pack writes it ('./', './a', './d/')."""
    if kind == "dir":
        name = name[:-1] if name.endswith("/") and name != "./" else name
        if name == "./":
            return "."
    if not name.startswith("./") or posixpath.normpath(name) != name[2:] or \
            name[2:].startswith(("/", "../")) or name[2:] in ("", ".", ".."):
        raise ArchiveError(f"entry {name[:100]!r} is not a plain path inside the item")
    return name[2:]


def unpack(archive: Path, dest: Path, files: dict[str, dict]) -> None:
    """Unpack archive into the empty folder dest, checking every entry against
    ``files`` (the validated description's record: rel path -> type, mode, sha256,
    size, link) as it goes; stops at the described sizes.

    Raises ArchiveError when the archive is damaged or differs from the record in
    any entry; dest is then left half-written for the caller to discard."""
    z = subprocess.Popen(["zstd", "-q", "-d", "-c", str(archive)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    seen: set[str] = set()
    modes: list[tuple[str, int]] = []
    src = _Capped(z.stdout, stream_limit(files))
    max_long = max((len(r) + len(e.get("link", "")) for r, e in files.items()), default=0) + 4
    ok = False
    try:
        for kind, name, mode, size, link in _entries(src, max_long):
            rel = _rel(name, kind)
            want = files.get(rel)
            if want is None:
                raise ArchiveError(f"{rel} is in the archive but not in its description")
            if rel in seen:
                raise ArchiveError(f"{rel} is in the archive twice")
            if kind != want["type"]:
                raise ArchiveError(f"{rel} is a {kind} in the archive, a {want['type']} in "
                                   "its description")
            parent = posixpath.dirname(rel) or "."
            if rel != "." and parent not in seen:
                raise ArchiveError(f"{rel} comes before its folder {parent}")
            path = dest / rel
            if kind == "symlink":
                if link != want["link"]:
                    raise ArchiveError(f"symlink {rel} points elsewhere than described")
                os.symlink(link, path)
            elif kind == "dir":
                if rel != ".":
                    path.mkdir()
                    modes.append((rel, want["mode"]))
            else:
                _write(src, path, rel, stat.S_IMODE(mode), size, want)
                os.chmod(path, want["mode"])
            seen.add(rel)
        ok = True
    except OSError as e:
        raise ArchiveError(f"cannot unpack it here: {e.strerror or e}") from None
    finally:
        if not ok:
            z.kill()  # a bomb is not decompressed to its end
        z.stdout.close()
        err = z.stderr.read(4096).decode(errors="replace").strip()
        z.stderr.close()
        code = z.wait()
    if code != 0:
        raise ArchiveError(f"zstd cannot decompress it ({err or f'exit {code}'})")
    missing = sorted(set(files) - seen)
    if missing:
        raise ArchiveError(f"{len(missing)} described entries are missing, e.g. {missing[0]}")
    # Folders last, deepest first: a sealed folder takes no new entries.
    for rel, mode in sorted(modes, reverse=True):
        os.chmod(dest / rel, mode)


def _write(src: _Capped, path: Path, rel: str, mode: int, size: int, want: dict) -> None:
    if size != want["size"]:
        raise ArchiveError(f"{rel} has {size:,} bytes, its description {want['size']:,}")
    if mode != want["mode"]:
        raise ArchiveError(f"{rel} has mode {mode:04o}, its description {want['mode']:04o}")
    h = hashlib.sha256()
    left = size
    # O_EXCL: never through anything already there (a symlink least of all).
    with open(path, "xb") as f:
        while left:
            chunk = src.exactly(min(CHUNK, left), rel)
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    pad = _padded(size) - size
    if pad:
        src.exactly(pad, rel)
    if h.hexdigest() != want["sha256"]:
        raise ArchiveError(f"{rel} differs from its description (sha256)")
