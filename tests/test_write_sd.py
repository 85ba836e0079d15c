"""write-sd: an image written to a loop device (or a regular file) reads back identical;
what must never be overwritten is refused before a byte is written: a missing path,
something that is neither a block device nor a file, a device over the size limit, a
device in use (mounted, a partition mounted, swap, a file behind a loop device that is,
under any of its names), the image itself, a bad image. Never a real device."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import subprocess
import time
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
            with pytest.raises(EmbedbuildError, match=f"{dev} \\(attached to {backing}\\) is "
                               "mounted on"):
                write_sd(image, backing)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    # (mounting changed the superblock itself: what matters is that no image byte landed)
    assert image.read_bytes()[:4096] not in backing.read_bytes()


def test_mounted_is_read_from_the_mount_table(tmp_path: Path):
    """Without root: the check reads /proc/self/mountinfo's format (a file of ours here)."""
    target = tmp_path / "target"
    target.write_bytes(b"")
    table = tmp_path / "mountinfo"
    table.write_text(f"22 1 8:1 / / rw - ext4 /dev/root rw\n"
                     f"40 22 0:55 / /media/card rw - vfat {target} rw\n")
    # A regular file has no device number to match: only a loop device on it would be.
    check(_image(tmp_path), target, mountinfo=table)


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


# -- in use, by identity: every name of a file, every partition, loop, mount, swap ----


def _run(*cmd: str) -> subprocess.CompletedProcess:
    # A bound on every tool call: a stuck mount fails the test, not the run.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def _partitioned_loop(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """A file with an MBR and one ext4 partition, attached with partitions (losetup -P)
    and that partition mounted: (backing file, loop device, mount point). Everything is
    unmounted and detached afterwards."""
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("sfdisk"):
        pytest.skip("loop devices need root, losetup and sfdisk")
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:
        f.truncate(24 * MIB)
    r = subprocess.run(["sfdisk", "-q", str(backing)], input="start=2048, type=83\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = _run("losetup", "-f", "-P", "--show", str(backing))
    if r.returncode != 0:
        pytest.skip(f"no loop device here: {r.stderr.strip()}")
    dev = Path(r.stdout.strip())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    part = Path(f"{dev}p1")
    try:
        # The kernel may scan before the loop has its size (seen here: no partition
        # after losetup -P); partx asks it to add them. Either way, wait for the node.
        for wait in (2, 8):
            deadline = time.monotonic() + wait
            while not part.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not part.exists() and shutil.which("partx"):
                _run("partx", "-a", str(dev))
        if not part.exists():
            pytest.skip("the loop device's partition node did not appear")
        assert _run("mkfs.ext4", "-q", "-F", str(part)).returncode == 0
        if _run("mount", str(part), str(mnt)).returncode != 0:
            pytest.skip("cannot mount here")
        try:
            yield backing, dev, mnt
        finally:
            _run("umount", str(mnt))
    finally:
        _run("losetup", "-d", str(dev))


def test_a_file_whose_loop_partition_is_mounted_is_refused_by_any_name(tmp_path: Path):
    image = _image(tmp_path)
    with _partitioned_loop(tmp_path) as (backing, dev, mnt):
        before = backing.read_bytes()
        other = tmp_path / "sub" / "same-disk.img"  # a hard link: another name, same inode
        other.parent.mkdir()
        os.link(backing, other)
        via = tmp_path / "via"  # a path through a symlinked folder
        via.symlink_to(tmp_path)
        for target in (backing, other, via / "disk.img"):
            with pytest.raises(EmbedbuildError) as e:
                write_sd(image, target)
            assert (f"{dev}p1 (a partition of {dev} (attached to {target})) is mounted on "
                    f"{mnt}") in str(e.value), str(e.value)
        # The loop device itself: its partition is mounted.
        with pytest.raises(EmbedbuildError, match=f"{dev}p1 \\(a partition of {dev}\\) is "
                           f"mounted on {mnt}"):
            write_sd(image, dev)
        assert backing.read_bytes() == before  # not a byte written


def test_mounts_are_matched_by_device_number_not_name(tmp_path: Path):
    """The partition mounted through a device node of another name is still found."""
    image = _image(tmp_path)
    with _partitioned_loop(tmp_path) as (backing, dev, mnt):
        _run("umount", str(mnt))
        rdev = os.stat(f"{dev}p1").st_rdev
        node = tmp_path / "card-part"
        os.mknod(node, 0o600 | stat.S_IFBLK, rdev)
        assert _run("mount", str(node), str(mnt)).returncode == 0
        with pytest.raises(EmbedbuildError, match=f"{dev}p1 \\(a partition of {dev}\\) is "
                           f"mounted on {mnt}"):
            write_sd(image, dev)
        with pytest.raises(EmbedbuildError, match="is mounted on"):
            write_sd(image, backing)


def test_a_file_used_as_swap_is_refused(tmp_path: Path):
    if os.geteuid() != 0 or not shutil.which("swapon"):
        pytest.skip("swap needs root")
    image = _image(tmp_path)
    swap = tmp_path / "swapfile"
    with open(swap, "wb") as f:
        f.write(bytes(8 * MIB))
    swap.chmod(0o600)
    assert _run("mkswap", str(swap)).returncode == 0
    if _run("swapon", str(swap)).returncode != 0:
        pytest.skip("swapon refused here")
    try:
        link = tmp_path / "another-name"
        os.link(swap, link)
        with pytest.raises(EmbedbuildError, match=f"{link} is used as swap"):
            write_sd(image, link)
    finally:
        _run("swapoff", str(swap))


def test_the_image_is_never_written_onto_itself(tmp_path: Path):
    image = _image(tmp_path)
    same = tmp_path / "hard-link.img"
    os.link(image, same)
    for target in (image, same):
        with pytest.raises(EmbedbuildError, match="is the image itself"):
            write_sd(image, target)
    with _loop(image) as dev, pytest.raises(EmbedbuildError, match="a loop device on the "
                                            "image itself"):
        write_sd(same, dev)


@pytest.mark.parametrize("image", ["missing", "folder", "fifo"])
def test_bad_image_is_one_error_line(tmp_path: Path, capsys, image: str):
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    path = tmp_path / "card.img"
    if image == "folder":
        path.mkdir()
    elif image == "fifo":
        os.mkfifo(path)
    code = main(["--store", str(tmp_path / "store"), "write-sd", "qemu-arm-virt", str(target),
                 "--image", str(path), "--yes"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    want = "does not exist" if image == "missing" else "is not a regular file"
    assert err.splitlines()[0] == f"error: image {path} {want}", err
    assert target.read_bytes() == b"keep" and not (tmp_path / "store").exists()
