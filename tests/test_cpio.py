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


def test_overlay_attributes_set_modes_owners_and_nodes(tmp_path: Path, monkeypatch):
    from embedbuild.load import find_overlay
    from embedbuild.rootfs.overlays import overlay_entries

    folder = tmp_path / "ov"
    (folder / "etc").mkdir(parents=True)
    (folder / "etc" / "secret").write_text("s\n")
    attrs = tmp_path / "ov.toml"
    attrs.write_text('[[entry]]\npath = "etc/secret"\nmode = 0o600\nuid = 5\ngid = 7\n'
                     '[[node]]\npath = "dev/ttyS1"\ntype = "char"\nmajor = 4\nminor = 65\n')
    monkeypatch.setenv("EMBEDBUILD_OVERLAYS", str(tmp_path))
    got = {e.path: e for e in overlay_entries(find_overlay("ov", "test"))}
    assert (got["etc/secret"].mode, got["etc/secret"].uid, got["etc/secret"].gid) == (0o600, 5, 7)
    node = got["dev/ttyS1"]
    assert (node.kind, node.major, node.minor, node.mode) == ("char", 4, 65, 0o600)
    data = _bytes(list(got.values()))
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode()
    assert any(line.startswith("crw-------") and "dev/ttyS1" in line
               for line in listing.splitlines())
