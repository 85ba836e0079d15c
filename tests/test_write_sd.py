"""write-sd: an image written to a loop device (or a regular file) reads back identical;
what must never be overwritten is refused before a byte is written: a missing path,
something that is neither a block device nor a file, a device over the size limit, a
device that is mounted. Never a real device."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedbuild.cli import main
from embedbuild.errors import EmbedbuildError
from embedbuild.sdwrite import check, inspect, write_sd

MIB = 1 << 20


def _image(tmp_path: Path, size: int = 3 * MIB) -> Path:
    image = tmp_path / "card.img"
    image.write_bytes(os.urandom(size))
    return image


@contextlib.contextmanager
def _loop(backing: Path) -> Iterator[Path]:
    """A loop device on a file of ours; detached (by its own name) afterwards."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("loop devices need root and losetup")
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device here: {r.stderr.strip()}")
    dev = Path(r.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", str(dev)], check=False)


def test_write_to_a_loop_device_reads_back_identical(tmp_path: Path):
    image = _image(tmp_path)
    backing = tmp_path / "backing"
    backing.write_bytes(b"\xa5" * (16 * MIB))
    with _loop(backing) as dev:
        info = inspect(dev)
        assert info.kind == "block device" and info.size == 16 * MIB
        assert any(str(16 * MIB) in line.replace(",", "") for line in info.describe())
        shown: list[str] = []
        report = write_sd(image, dev, confirm=lambda lines: shown.extend(lines) or True)
        assert report.bytes == image.stat().st_size
    data = backing.read_bytes()
    assert data[: len(image.read_bytes())] == image.read_bytes()
    assert data[len(image.read_bytes()):] == b"\xa5" * (16 * MIB - 3 * MIB)  # rest untouched
    assert shown[0] == "about to overwrite:" and str(dev) in shown[1]


def test_write_to_a_regular_file(tmp_path: Path):
    image = _image(tmp_path)
    target = tmp_path / "target"
    target.write_bytes(b"")
    write_sd(image, target)
    assert target.read_bytes() == image.read_bytes()


def test_not_confirmed_writes_nothing(tmp_path: Path):
    image = _image(tmp_path)
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    with pytest.raises(EmbedbuildError, match="not confirmed"):
        write_sd(image, target, confirm=lambda lines: False)
    assert target.read_bytes() == b"keep"


def test_missing_device_is_refused(tmp_path: Path):
    with pytest.raises(EmbedbuildError, match="does not exist"):
        check(_image(tmp_path), tmp_path / "sdz")


@pytest.mark.parametrize("what", ["folder", "/dev/null"])
def test_neither_block_device_nor_file_is_refused(tmp_path: Path, what: str):
    target = tmp_path if what == "folder" else Path(what)
    with pytest.raises(EmbedbuildError, match="neither a block device nor a regular file"):
        check(_image(tmp_path), target)


def test_device_over_the_limit_is_refused_untouched(tmp_path: Path):
    image = _image(tmp_path)
    backing = tmp_path / "big"
    with open(backing, "wb") as f:
        f.truncate(128 * MIB)
    with _loop(backing) as dev, pytest.raises(EmbedbuildError, match=r"larger than the 64\.0 MiB"):
        write_sd(image, dev, max_size=64 * MIB)
    with open(backing, "rb") as f:
        assert f.read(MIB) == bytes(MIB)


def test_mounted_device_is_refused_untouched(tmp_path: Path):
    image = _image(tmp_path)
    backing = tmp_path / "fs"
    with open(backing, "wb") as f:
        f.truncate(16 * MIB)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with _loop(backing) as dev:
        subprocess.run(["mkfs.ext4", "-q", "-F", str(dev)], check=True)
        if subprocess.run(["mount", str(dev), str(mnt)], capture_output=True).returncode:
            pytest.skip("cannot mount here")
        try:
            with pytest.raises(EmbedbuildError, match=f"in use: {dev} is mounted on {mnt}"):
                write_sd(image, dev)
            # The file behind a mounted loop device is in use too.
            with pytest.raises(EmbedbuildError, match="is mounted on"):
                write_sd(image, backing)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    # (mounting changed the superblock itself: what matters is that no image byte landed)
    assert image.read_bytes()[:4096] not in backing.read_bytes()


def test_mounted_is_read_from_the_mount_table(tmp_path: Path):
    """Without root: the check reads /proc/mounts' format (a file of ours here)."""
    target = tmp_path / "target"
    target.write_bytes(b"")
    table = tmp_path / "mounts"
    table.write_text(f"/dev/root / ext4 rw 0 0\n{target} /media/card vfat rw 0 0\n")
    # A regular file has no device number to match: only a loop device on it would be.
    check(_image(tmp_path), target, mounts=table)


def test_cli_without_yes_needs_a_terminal(tmp_path: Path, capsys, monkeypatch):
    image = _image(tmp_path)
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))  # not a terminal, even saying yes
    code = main(["write-sd", "qemu-arm-virt", str(target), "--image", str(image)])
    err = capsys.readouterr().err
    assert code == 1 and "confirmation needs a terminal" in err and "--yes" in err
    assert "about to overwrite" in err and "regular file" in err
    assert target.read_bytes() == b"keep"
    assert main(["write-sd", "qemu-arm-virt", str(target), "--image", str(image),
                 "--yes"]) == 0
    assert target.read_bytes() == image.read_bytes()
    assert "read back and compared" in capsys.readouterr().err


def test_cli_refuses_a_missing_device_before_building(tmp_path: Path, capsys):
    code = main(["--store", str(tmp_path / "store"), "write-sd", "qemu-arm-virt",
                 str(tmp_path / "nothing")])
    assert code == 1 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
