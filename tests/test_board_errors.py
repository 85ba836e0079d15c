"""Bad board input: a short error naming file/line/key and what to do, exit 1,
no traceback, and the store untouched."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from conftest import cli, run_main, snapshot, unverified_downloads


def _expect_error(board: Path, store: Path, *needles: str, process: bool = False) -> str:
    """The build is refused (in this process; in one of its own with ``process``)."""
    before = snapshot(store)
    run = cli if process else run_main
    r = run("build", str(board), "--out-link", str(board / "result"), store=store)
    assert r.code == 1, (r.code, r.err)
    assert "Traceback" not in r.err
    for n in needles:
        assert n in r.err, f"{n!r} not in:\n{r.err}"
    assert snapshot(store) == before
    assert not (board / "result").exists()
    return r.err


def test_malformed_toml(boards: Path, tmp_path: Path):
    toml = boards / "qemu-arm-virt" / "board.toml"
    lines = toml.read_text().splitlines()
    lines[2] = "cross_compile = arm-linux-gnueabihf-"  # unquoted string
    toml.write_text("\n".join(lines) + "\n")
    _expect_error(boards / "qemu-arm-virt", tmp_path / "store", "board.toml:3", "malformed TOML",
                  process=True)


def test_unknown_key(boards: Path, tmp_path: Path):
    toml = boards / "qemu-arm-virt" / "board.toml"
    toml.write_text(toml.read_text().replace('image = "zImage"', 'imgae = "zImage"'))
    err = _expect_error(boards / "qemu-arm-virt", tmp_path / "store", "kernel.imgae", "unknown key")
    line = next(n for n, t in enumerate(toml.read_text().splitlines(), 1) if t.startswith("imgae"))
    assert f"board.toml:{line}" in err


def test_missing_fragment(boards: Path, tmp_path: Path):
    toml = boards / "qemu-arm-virt" / "board.toml"
    toml.write_text(toml.read_text().replace('"kernel.config"]', '"kernel.config", "nope.config"]'))
    _expect_error(
        boards / "qemu-arm-virt",
        tmp_path / "store",
        "kernel.fragments[2]",
        "nope.config",
        "file not found",
    )


def test_bad_fragment_line(boards: Path, tmp_path: Path):
    frag = boards / "qemu-arm-virt" / "kernel.config"
    frag.write_text(frag.read_text() + "VIRTIO_NET=y\n")
    n = len(frag.read_text().splitlines())
    _expect_error(
        boards / "qemu-arm-virt",
        tmp_path / "store",
        f"kernel.config:{n}",
        "not a Kconfig assignment",
    )


def test_conflicting_fragments(boards: Path, tmp_path: Path):
    frag = boards / "qemu-arm-virt" / "kernel.config"
    frag.write_text(frag.read_text() + "# CONFIG_INET is not set\n")
    n = len(frag.read_text().splitlines())
    base = boards / "common" / "kernel-base.config"
    bline = next(i for i, t in enumerate(base.read_text().splitlines(), 1) if t == "CONFIG_INET=y")
    _expect_error(
        boards / "qemu-arm-virt",
        tmp_path / "store",
        "CONFIG_INET",
        f"kernel-base.config:{bline}",
        f"kernel.config:{n}",
    )


def test_sha256_mismatch(boards: Path, tmp_path: Path, monkeypatch):
    fake = tmp_path / "linux.tar.xz"
    fake.write_bytes(b"not the kernel")
    lock = boards / "common" / "lock.toml"
    lock.write_text(re.sub(r'deb = "linux-source-6.1"\nversion = ".*"\nmember = ".*"',
                           f'file = "{fake}"', lock.read_text()))
    downloads = tmp_path / "downloads"
    r = cli(
        "build",
        str(boards / "qemu-arm-virt"),
        "--out-link",
        str(tmp_path / "result"),
        store=tmp_path / "store",
        env={"EMBEDBUILD_DOWNLOADS": str(downloads)},
    )
    assert r.code == 1 and "Traceback" not in r.err
    assert "sha256 mismatch" in r.err and str(fake) in r.err
    # Neither the download cache nor the store kept anything of the refused file.
    assert unverified_downloads(downloads) == []
    assert not (downloads / hashlib.sha256(fake.read_bytes()).hexdigest()).exists()
    assert not any(p.name.endswith("linux-6.1-src") for p in (tmp_path / "store").glob("*"))


def test_unknown_board_lists_known(tmp_path: Path):
    r = cli("build", "no-such-board", store=tmp_path / "store")
    assert r.code == 1 and "Traceback" not in r.err
    assert "unknown board 'no-such-board'" in r.err
    assert "qemu-arm-virt" in r.err
    assert not (tmp_path / "store").exists()


def test_unknown_source_name(boards: Path, tmp_path: Path):
    toml = boards / "qemu-arm-virt" / "board.toml"
    toml.write_text(toml.read_text().replace('source = "linux-6.1"', 'source = "linux-9"'))
    _expect_error(boards / "qemu-arm-virt", tmp_path / "store", "linux-9", "board.toml:6")
