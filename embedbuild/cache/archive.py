"""Store items as reproducible archives: GNU tar (names sorted, times, owners and hard
links dropped) compressed with zstd, and the checked way back into a folder.

Packing the same item twice gives the same bytes, so an archive's sha256 names it.
Unpacking trusts nothing in the archive: every entry must be one the signed
description lists, with its type, mode and (for files) size and sha256, nothing may
be missing, and no entry may leave the folder or pass through a symlink.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile
from pathlib import Path

COMPRESSION = "zstd"
SUFFIX = ".tar.zst"


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


def _name(member: tarfile.TarInfo) -> str:
    """The member's path relative to the item ('.' for the item itself), refused when it
    could leave the folder."""
    rel = os.path.normpath(member.name)
    if rel.startswith("/") or rel == ".." or rel.startswith("../"):
        raise ArchiveError(f"entry {member.name!r} points outside the item")
    return rel


def unpack(archive: Path, dest: Path, files: dict[str, dict]) -> None:
    """Unpack archive into the empty folder dest, checking every entry against
    ``files`` (the description's record: rel path -> type, mode, sha256, size, link).

    Raises ArchiveError when the archive is damaged or differs from the record in
    any entry; dest is then left half-written for the caller to discard."""
    z = subprocess.Popen(["zstd", "-q", "-d", "-c", str(archive)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    seen: set[str] = set()
    links: set[str] = set()
    modes: list[tuple[str, int]] = []
    try:
        with tarfile.open(fileobj=z.stdout, mode="r|") as tar:
            for m in tar:
                rel = _name(m)
                want = files.get(rel)
                if want is None:
                    raise ArchiveError(f"{rel} is in the archive but not in its description")
                parent = os.path.dirname(rel)
                while parent:
                    if parent in links:
                        raise ArchiveError(f"{rel} lies behind the symlink {parent}")
                    parent = os.path.dirname(parent)
                path = dest / rel
                kind = "dir" if m.isdir() else "file" if m.isreg() else (
                    "symlink" if m.issym() else "other")
                if kind != want.get("type"):
                    raise ArchiveError(f"{rel} is a {kind} in the archive, a "
                                       f"{want.get('type')} in its description")
                if kind == "symlink":
                    if m.linkname != want.get("link"):
                        raise ArchiveError(f"symlink {rel} points elsewhere than described")
                    os.symlink(m.linkname, path)
                    links.add(rel)
                elif kind == "dir":
                    if rel != ".":
                        path.mkdir()
                        modes.append((rel, want["mode"]))
                else:
                    _write(tar, m, path, rel, want)
                    os.chmod(path, want["mode"])
                seen.add(rel)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ArchiveError(f"unreadable archive ({e.__class__.__name__}: {e})") from None
    finally:
        z.stdout.close()
        err = z.stderr.read().decode(errors="replace").strip()
        code = z.wait()
    if code != 0:
        raise ArchiveError(f"zstd cannot decompress it ({err or f'exit {code}'})")
    missing = sorted(set(files) - seen - {"."})
    if missing:
        raise ArchiveError(f"{len(missing)} described entries are missing, e.g. {missing[0]}")
    # Folders last, deepest first: a sealed folder takes no new entries.
    for rel, mode in sorted(modes, reverse=True):
        os.chmod(dest / rel, mode)


def _write(tar: tarfile.TarFile, m: tarfile.TarInfo, path: Path, rel: str,
           want: dict) -> None:
    if m.size != want.get("size"):
        raise ArchiveError(f"{rel} has {m.size} bytes, its description {want.get('size')}")
    if stat.S_IMODE(m.mode) != want.get("mode"):
        raise ArchiveError(f"{rel} has mode {stat.S_IMODE(m.mode):04o}, its description "
                           f"{want.get('mode', 0):04o}")
    src = tar.extractfile(m)
    h = hashlib.sha256()
    with open(path, "xb") as f:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            f.write(chunk)
    if h.hexdigest() != want.get("sha256"):
        raise ArchiveError(f"{rel} differs from its description (sha256)")
