"""Writing an SD-card image to a card (`embedbuild write-sd`): refuse what must never be
overwritten, show what is about to be, write, flush, read back and compare.

Refused: a path that does not exist or is neither a block device nor a regular file; a
device larger than the limit (a system disk is never hit by a typo); a device that is
in use: it or one of its partitions mounted (/proc/mounts), held by another device
(/sys/block/X/holders: LVM, RAID, dm-crypt), or for a regular file, attached to a loop
device that is.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from embedbuild.errors import EmbedbuildError

DEFAULT_MAX_SIZE = 64 << 30
CHUNK = 4 << 20
SYS_BLOCK = Path("/sys/class/block")


@dataclass
class Device:
    """What a write would overwrite.

    Args:
        path: as given.
        kind: "block device" or "regular file".
        size: bytes.
        name: the kernel's name (sdb, mmcblk0, loop3), for a block device.
        model: vendor and model from /sys/block/X/device, if it says.
        partitions: (name, bytes) of its partitions.
        rdevs: device numbers of the device and its partitions (to find their mounts).
    """

    path: Path
    kind: str
    size: int
    name: str | None = None
    model: str | None = None
    partitions: list[tuple[str, int]] = field(default_factory=list)
    rdevs: set[int] = field(default_factory=set)

    def describe(self) -> list[str]:
        """What the confirmation shows."""
        what = f"{self.path}: {self.kind}, {human(self.size)} ({self.size:,} bytes)"
        lines = [what + (f", {self.model}" if self.model else "")]
        if self.partitions:
            lines += [f"  partition {n}: {human(s)}" for n, s in self.partitions]
        elif self.kind == "block device":
            lines.append("  no partitions")
        return lines


def human(n: int) -> str:
    """Bytes in binary units, e.g. 14.8 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    raise AssertionError


def _sys(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def inspect(path: Path) -> Device:
    """The device (or file) at path, with its size, model and partitions from /sys."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise EmbedbuildError(f"{path} does not exist",
                              hint="give the card's device (lsblk lists them), e.g. /dev/sdX "
                              "or /dev/mmcblk0") from None
    if stat.S_ISREG(st.st_mode):
        return Device(path, "regular file", st.st_size)
    if not stat.S_ISBLK(st.st_mode):
        raise EmbedbuildError(f"{path} is neither a block device nor a regular file",
                              hint="give the whole card's device, e.g. /dev/sdX")
    sysdir = Path("/sys/dev/block") / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    real = sysdir.resolve()
    if (real / "partition").exists():
        raise EmbedbuildError(f"{path} is a partition ({real.name}), not a whole card",
                              hint=f"give the whole device, {real.parent.name}")
    size = int(_sys(real / "size") or 0) * 512
    model = " ".join(filter(None, (_sys(real / "device" / "vendor"),
                                   _sys(real / "device" / "model")))) or None
    parts, rdevs = [], {st.st_rdev}
    for p in sorted(real.iterdir()):
        if (p / "partition").exists():
            parts.append((p.name, int(_sys(p / "size") or 0) * 512))
            major, minor = (_sys(p / "dev") or "0:0").split(":")
            rdevs.add(os.makedev(int(major), int(minor)))
    return Device(path, "block device", size, real.name, model, parts, rdevs)


def in_use(dev: Device, mounts: Path = Path("/proc/mounts")) -> list[str]:
    """Why the device must not be written now: its mounts and holders (empty: free)."""
    why = []
    rdevs = set(dev.rdevs)
    if dev.kind == "regular file":
        # A file attached to a loop device is in use if that device is.
        target = str(dev.path.resolve())
        for loop in sorted(SYS_BLOCK.glob("loop*")):
            if _sys(loop / "loop" / "backing_file") == target:
                major, minor = (_sys(loop / "dev") or "0:0").split(":")
                rdevs.add(os.makedev(int(major), int(minor)))
                why += [f"{loop.name} (attached to it) is held by {h.name}"
                        for h in sorted((loop / "holders").glob("*"))]
    for line in (_sys(mounts) or "").splitlines():
        source, where = line.split()[:2]
        try:
            if source.startswith("/") and Path(source).stat().st_rdev in rdevs:
                why.append(f"{source} is mounted on {where}")
        except OSError:
            continue
    if dev.name:
        real = (SYS_BLOCK / dev.name).resolve()
        for d in [real, *(p for p in real.iterdir() if (p / "partition").exists())]:
            why += [f"{d.name} is held by {h.name}" for h in sorted((d / "holders").glob("*"))]
    return why


@dataclass
class WriteReport:
    """What was written and how fast."""

    bytes: int
    write_seconds: float
    verify_seconds: float

    def lines(self) -> list[str]:
        rate = self.bytes / 2**20 / max(self.write_seconds, 1e-6)
        return [f"wrote {self.bytes:,} bytes in {self.write_seconds:.2f} s ({rate:.1f} MiB/s)",
                f"read back and compared in {self.verify_seconds:.2f} s: identical"]


def check_device(device: Path, max_size: int = DEFAULT_MAX_SIZE,
                 mounts: Path = Path("/proc/mounts")) -> Device:
    """The refusals that concern the device alone; returns what would be overwritten."""
    dev = inspect(device)
    if dev.size > max_size:
        raise EmbedbuildError(f"{device} is {human(dev.size)}, larger than the "
                              f"{human(max_size)} limit: not written",
                              hint="SD cards are smaller; if this really is the card, raise "
                              "the limit with --max-size SIZE")
    if why := in_use(dev, mounts):
        raise EmbedbuildError(f"{device} is in use: {'; '.join(why)}",
                              hint="unmount its partitions first (umount), then write")
    return dev


def check(image: Path, device: Path, max_size: int = DEFAULT_MAX_SIZE,
          mounts: Path = Path("/proc/mounts")) -> Device:
    """Every refusal, before anything is written; returns what would be overwritten."""
    dev = check_device(device, max_size, mounts)
    size = image.stat().st_size
    if dev.kind == "block device" and size > dev.size:
        raise EmbedbuildError(f"the image ({size:,} bytes) is larger than {device} "
                              f"({dev.size:,} bytes)")
    return dev


def write(image: Path, dev: Device) -> WriteReport:
    """Write the image at the start of the device, flush it to the device, then read it
    back past the page cache and compare."""
    want = hashlib.sha256()
    t0 = time.monotonic()
    # O_EXCL on a block device: the kernel itself refuses (EBUSY) one that is mounted or
    # held, closing the gap between the checks above and the write.
    excl = os.O_EXCL if dev.kind == "block device" else 0
    try:
        fd = os.open(dev.path, os.O_WRONLY | os.O_CLOEXEC | excl)
    except OSError as e:
        raise EmbedbuildError(f"{dev.path} cannot be opened for writing: {e.strerror}",
                              hint="unmount it and stop what uses it") from None
    try:
        with open(image, "rb") as src:
            while chunk := src.read(CHUNK):
                want.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    written = image.stat().st_size
    t1 = time.monotonic()
    got = hashlib.sha256()
    fd = os.open(dev.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Drop what the write left in the page cache: the comparison reads the device.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        left = written
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                break
            got.update(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if got.digest() != want.digest():
        raise EmbedbuildError(f"{dev.path} does not read back what was written",
                              hint="the card may be failing or fake (its real size smaller "
                              "than it says): try another card")
    return WriteReport(written, t1 - t0, time.monotonic() - t1)


def write_sd(image: Path, device: Path, *, max_size: int = DEFAULT_MAX_SIZE,
             confirm: Callable[[list[str]], bool] | None = None,
             mounts: Path = Path("/proc/mounts")) -> WriteReport:
    """Check, show what will be overwritten and ask ``confirm`` (None: do not ask), then
    write and verify."""
    dev = check(image, device, max_size, mounts)
    if confirm is not None and not confirm(
            ["about to overwrite:", *dev.describe(),
             f"with {image.name} ({image.stat().st_size:,} bytes)"]):
        raise EmbedbuildError("not written: not confirmed")
    return write(image, dev)
