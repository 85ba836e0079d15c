"""Reading a Debian binary package (.deb) without dpkg: one file out of its data archive.

A .deb is an ``ar`` archive holding ``debian-binary``, ``control.tar.*`` and
``data.tar.*``; the files the package installs are members of the data archive. The
member is streamed out (the kernel tarball of linux-source-6.1 is 138 MB: nothing of
it is held in memory) and bounded by the size the caller expects.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from embedbuild.errors import SourceError

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
# Compressions of data.tar that Python's tarfile reads itself; zstd (which newer Debian
# releases use) goes through the zstd command.
_TARFILE_MODES = {".xz": "r|xz", ".gz": "r|gz", ".bz2": "r|bz2", "": "r|"}


def _ar_members(f: BinaryIO, where: str) -> Iterator[tuple[str, int]]:
    """(name, size) of each member of an ar archive, the stream positioned at its data."""
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise SourceError(f"{where} is not a Debian package (no ar archive header)")
    while True:
        header = f.read(AR_HEADER)
        if not header:
            return
        if len(header) != AR_HEADER or header[58:60] != b"`\n":
            raise SourceError(f"{where}: damaged ar member header")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise SourceError(f"{where}: damaged ar member size") from None
        start = f.tell()
        yield name, size
        # ar pads each member to an even length.
        f.seek(start + size + (size & 1))


class _Window:
    """A read-only stream over ``size`` bytes of ``f`` from its current position."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        data = self.f.read(n)
        self.left -= len(data)
        return data


@contextmanager
def _data_tar(f: BinaryIO, name: str, size: int) -> Iterator[tarfile.TarFile]:
    suffix = name.removeprefix("data.tar")
    window = _Window(f, size)
    if suffix in _TARFILE_MODES:
        with tarfile.open(fileobj=window, mode=_TARFILE_MODES[suffix]) as tf:  # type: ignore[call-overload]
            yield tf
        return
    if suffix != ".zst":
        raise SourceError(f"data archive {name}: unknown compression")
    proc = subprocess.Popen(["zstd", "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    def feed() -> None:
        with proc.stdin:  # type: ignore[union-attr]
            while chunk := window.read(1 << 20):
                proc.stdin.write(chunk)  # type: ignore[union-attr]

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            yield tf
    finally:
        proc.kill()
        proc.wait()
        t.join(5)


def extract_member(deb: Path, member: str, dest: IO[bytes], limit: int) -> int:
    """Copy the file ``member`` (a path as installed, e.g. usr/src/x.tar.xz) of the
    package ``deb`` into ``dest``; returns its size. A member larger than ``limit``
    bytes is refused before any byte of it is copied."""
    want = member.strip("/")
    with open(deb, "rb") as f:
        for name, size in _ar_members(f, deb.name):
            if not name.startswith("data.tar"):
                continue
            with _data_tar(f, name, size) as tf:
                for m in tf:
                    if m.name.removeprefix("./").strip("/") != want:
                        continue
                    if not m.isreg():
                        raise SourceError(f"{deb.name}: {member} is not a regular file")
                    if m.size > limit:
                        raise SourceError(f"{deb.name}: {member} is {m.size:,} bytes, more "
                                          f"than the {limit:,} expected")
                    src = tf.extractfile(m)
                    assert src is not None
                    shutil.copyfileobj(src, dest, 1 << 20)
                    return m.size
            raise SourceError(f"{deb.name} has no file {member}",
                              hint="check the source's member (the path the package installs)")
    raise SourceError(f"{deb.name} has no data archive")
