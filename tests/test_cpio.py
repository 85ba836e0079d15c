"""The cpio writer: reproducible bytes, readable by GNU cpio, round-trips."""

from __future__ import annotations

import subprocess
from pathlib import Path

from embedbuild.cpio import Entry, read_newc, write_newc

ENTRIES = [
    Entry("etc", "dir", 0o755),
    Entry("etc/motd", "file", 0o644, data=b"hello\n"),
    Entry("bin", "dir", 0o755),
    Entry("bin/sh", "symlink", 0o777, target="busybox"),
    Entry("dev", "dir", 0o755),
    Entry("dev/console", "char", 0o600, major=5, minor=1),
    Entry("odd", "file", 0o600, data=b"x" * 5, uid=12, gid=34),
]


def _bytes(entries) -> bytes:
    import io

    b = io.BytesIO()
    write_newc(entries, b)
    return b.getvalue()


def test_same_entries_same_bytes_in_any_order():
    assert _bytes(ENTRIES) == _bytes(list(reversed(ENTRIES)))


def test_gnu_cpio_reads_it(tmp_path: Path):
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=_bytes(ENTRIES),
                             capture_output=True, check=True).stdout.decode()
    lines = listing.splitlines()
    assert [line.split()[-1] if "->" not in line else line.split()[-3] for line in lines] == \
        sorted(e.path for e in ENTRIES)
    assert all(" root " in line or " 12 " in line for line in lines)
    assert all("1970" in line or "Jan  1" in line for line in lines)


def test_round_trip_of_concatenated_archives():
    data = _bytes(ENTRIES) + _bytes([Entry("x", "file", 0o755, data=b"abc")])
    got = read_newc(data)
    assert [e.path for e in got] == [*sorted(e.path for e in ENTRIES), "x"]
    assert set(got) == set(ENTRIES) | {Entry("x", "file", 0o755, data=b"abc")}
