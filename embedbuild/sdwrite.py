"""Writing an SD-card image to a card (`embedbuild write-sd`): refuse what must never be
overwritten, show what is about to be, write, flush, read back and compare.

Disks are compared by identity, never by name: a block device by its device number, a
file by its device and inode (so a hard link or another path to it is the same file).
Refused: an image that is missing or not a regular file; a target that does not exist
or is neither a block device nor a regular file; a partition instead of the whole
device; a device larger than the limit (a system disk is never hit by a typo); the
image itself (or a loop device on it); a target in use. In use: the device or any of
its partitions mounted (/proc/self/mountinfo, matched by major:minor and by the mounted
device's number), used as swap (/proc/swaps), or held by another device
(/sys/.../holders: LVM, RAID, dm-crypt); a file used as swap; and, for a file or a
device, every loop device whose backing file is it (the loop's own record of the
backing inode, LOOP_GET_STATUS64, and its backing_file in /sys) when that loop device
or one of its partitions is in use in any of these ways.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from embedbuild.errors import EmbedbuildError

DEFAULT_MAX_SIZE = 64 << 30
CHUNK = 4 << 20
SYS_BLOCK = Path("/sys/class/block")
SYS_DEV_BLOCK = Path("/sys/dev/block")


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
        identity: (st_dev, st_ino) of a file, (0, st_rdev) of a block device: what the
            write checks it still opens.
    """

    path: Path
    kind: str
    size: int
    name: str | None = None
    model: str | None = None
    partitions: list[tuple[str, int]] = field(default_factory=list)
    identity: tuple[int, int] = (0, 0)

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


def _devnum(text: str | None) -> int | None:
    """A device number from sysfs's 'MAJOR:MINOR'."""
    major, sep, minor = (text or "").partition(":")
    if not (sep and major.isdigit() and minor.isdigit()):
        return None
    return os.makedev(int(major), int(minor))


def _block_dir(rdev: int) -> Path | None:
    """The device's folder in /sys (resolved), or None."""
    d = SYS_DEV_BLOCK / f"{os.major(rdev)}:{os.minor(rdev)}"
    return d.resolve() if d.exists() else None


def _partition_dirs(real: Path) -> list[Path]:
    try:
        return sorted(p for p in real.iterdir() if (p / "partition").exists())
    except OSError:
        return []


def inspect(path: Path) -> Device:
    """The device (or file) at path, with its size, model and partitions from /sys."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise EmbedbuildError(f"{path} does not exist",
                              hint="give the card's device (lsblk lists them), e.g. /dev/sdX "
                              "or /dev/mmcblk0") from None
    except OSError as e:
        raise EmbedbuildError(f"{path} cannot be examined: {e.strerror}") from None
    if stat.S_ISREG(st.st_mode):
        return Device(path, "regular file", st.st_size, identity=(st.st_dev, st.st_ino))
    if not stat.S_ISBLK(st.st_mode):
        raise EmbedbuildError(f"{path} is neither a block device nor a regular file",
                              hint="give the whole card's device, e.g. /dev/sdX")
    real = _block_dir(st.st_rdev)
    if real is None:
        raise EmbedbuildError(f"{path}: the kernel has no such block device "
                              f"({os.major(st.st_rdev)}:{os.minor(st.st_rdev)})",
                              hint="is the card still plugged in? lsblk lists the devices")
    if (real / "partition").exists():
        raise EmbedbuildError(f"{path} is a partition ({real.name}), not a whole card",
                              hint=f"give the whole device, {real.parent.name}")
    size = int(_sys(real / "size") or 0) * 512
    model = " ".join(filter(None, (_sys(real / "device" / "vendor"),
                                   _sys(real / "device" / "model")))) or None
    parts = [(p.name, int(_sys(p / "size") or 0) * 512) for p in _partition_dirs(real)]
    return Device(path, "block device", size, real.name, model, parts,
                  identity=(0, st.st_rdev))


# -- what uses a device or a file ----------------------------------------------------

LOOP_GET_STATUS64 = 0x4C05
# struct loop_info64 up to lo_flags: lo_device, lo_inode, lo_rdevice, lo_offset,
# lo_sizelimit (u64), lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags (u32);
# then names and keys: 232 bytes in all.
_LOOP_INFO = struct.Struct("=QQQQQIIII")
_LOOP_INFO_SIZE = 232


def _kernel_dev(encoded: int) -> int:
    """A device number as the kernel encodes it for userspace (new_encode_dev)."""
    major = (encoded >> 8) & 0xFFF
    minor = (encoded & 0xFF) | ((encoded >> 12) & 0xFFF00)
    return os.makedev(major, minor)


@dataclass(frozen=True)
class Loop:
    """An attached loop device and what backs it.

    Args:
        name: loopN.
        rdev: its device number.
        files: (st_dev, st_ino) of its backing file, as the loop records it (ioctl)
            and as its backing_file path names it now.
        backing_rdev: the backing file's device number, when it is a block device.
    """

    name: str
    rdev: int
    files: frozenset[tuple[int, int]]
    backing_rdev: int | None


def _loop_status(name: str, rdev: int) -> tuple[int, int, int] | None:
    """(st_dev, st_ino, rdev) of the backing file, from the loop device itself."""
    node = Path("/dev") / name
    try:
        if node.stat().st_rdev != rdev:  # /dev is not the kernel's view here
            return None
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = bytearray(_LOOP_INFO_SIZE)
        fcntl.ioctl(fd, LOOP_GET_STATUS64, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    dev, ino, backing_rdev = _LOOP_INFO.unpack_from(buf)[:3]
    return _kernel_dev(dev), ino, _kernel_dev(backing_rdev)


def loops(sys_block: Path | None = None) -> list[Loop]:
    """Every attached loop device with its backing file's identity."""
    sys_block = sys_block or SYS_BLOCK
    found = []
    for d in sorted(sys_block.glob("loop*")):
        backing = _sys(d / "loop" / "backing_file")
        rdev = _devnum(_sys(d / "dev"))
        if backing is None or rdev is None:
            continue  # not attached
        files: set[tuple[int, int]] = set()
        backing_rdev = None
        if status := _loop_status(d.name, rdev):
            files.add(status[:2])
            backing_rdev = status[2] or None
        with contextlib.suppress(OSError):
            st = os.stat(backing.removesuffix(" (deleted)"))
            files.add((st.st_dev, st.st_ino))
            if stat.S_ISBLK(st.st_mode):
                backing_rdev = backing_rdev or st.st_rdev
        found.append(Loop(d.name, rdev, frozenset(files), backing_rdev))
    return found


def _unescape(field: str) -> str:
    """A mountinfo or swaps field: spaces, tabs, newlines and backslashes are octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    """A mounted filesystem: the device number it reports, its source, where it is."""

    rdev: int | None
    source: str
    target: str


def mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Mount]:
    """Every mount of this mount namespace."""
    found = []
    for line in (_sys(mountinfo) or "").splitlines():
        fields = line.split()
        if "-" not in fields[6:] or len(fields) < 10:
            continue
        sep = fields.index("-", 6)
        found.append(Mount(_devnum(fields[2]), _unescape(fields[sep + 2]) if
                           len(fields) > sep + 2 else "", _unescape(fields[4])))
    return found


def _identity(path: str) -> tuple[int, int, int] | None:
    """(st_dev, st_ino, st_rdev) of a path, or None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_rdev if stat.S_ISBLK(st.st_mode) else 0


def swaps(table: Path = Path("/proc/swaps")) -> list[tuple[str, tuple[int, int, int] | None]]:
    """Every swap area: (its path, its identity (st_dev, st_ino, st_rdev) or None)."""
    out = []
    for line in (_sys(table) or "").splitlines()[1:]:
        if not line.split():
            continue
        name = _unescape(line.split()[0]).removesuffix("(deleted)")
        out.append((name, _identity(name)))
    return out


@dataclass
class _Usage:
    """One look at the machine: mounts, swaps and loops, asked about many devices."""

    mounts: list[Mount]
    swaps: list[tuple[str, tuple[int, int, int] | None]]
    loops: list[Loop]
    seen: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        # A mount's source device as it is now (major:minor in mountinfo is the
        # filesystem's, which for btrfs and the like is not its device's).
        self.sources = [(m, (_identity(m.source) or (0, 0, 0))[2] if
                         m.source.startswith("/") else 0) for m in self.mounts]

    def of_file(self, ident: tuple[int, int], what: str) -> list[str]:
        """Why the file with this (st_dev, st_ino) must not be written."""
        why = [f"{what} is used as swap ({name})" for name, i in self.swaps
               if i is not None and i[:2] == ident]
        for loop in self.loops:
            if ident in loop.files:
                why += self.of_block(loop.rdev, f"/dev/{loop.name} (attached to {what})")
        return why

    def of_block(self, rdev: int, what: str) -> list[str]:
        """Why the block device with this number, or a partition of it, must not be
        written: mounts, swaps, holders, and loops on it that are in use."""
        if rdev in self.seen:
            return []
        self.seen.add(rdev)
        real = _block_dir(rdev)
        family = [(rdev, what, real)]
        for p in _partition_dirs(real) if real else []:
            if (prdev := _devnum(_sys(p / "dev"))) is not None:
                family.append((prdev, f"/dev/{p.name} (a partition of {what})", p))
        why = []
        for r, name, d in family:
            why += [f"{name} is mounted on {m.target}" for m, source in self.sources
                    if r in (m.rdev, source)]
            why += [f"{name} is used as swap" for _, i in self.swaps
                    if i is not None and i[2] == r]
            if d is not None:
                why += [f"{name} is held by {h.name}" for h in sorted((d / "holders").glob("*"))]
            for loop in self.loops:
                if loop.backing_rdev == r:
                    why += self.of_block(loop.rdev, f"/dev/{loop.name} (attached to {name})")
        return why


def in_use(dev: Device, mountinfo: Path = Path("/proc/self/mountinfo"),
           swap_table: Path = Path("/proc/swaps")) -> list[str]:
    """Why the device or file must not be written now (empty: free)."""
    usage = _Usage(mounts(mountinfo), swaps(swap_table), loops())
    if dev.kind == "regular file":
        return usage.of_file(dev.identity, str(dev.path))
    return usage.of_block(dev.identity[1], str(dev.path))


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
                 mountinfo: Path = Path("/proc/self/mountinfo")) -> Device:
    """The refusals that concern the device alone; returns what would be overwritten."""
    dev = inspect(device)
    if dev.size > max_size:
        raise EmbedbuildError(f"{device} is {human(dev.size)}, larger than the "
                              f"{human(max_size)} limit: not written",
                              hint="SD cards are smaller; if this really is the card, raise "
                              "the limit with --max-size SIZE")
    if why := in_use(dev, mountinfo):
        raise EmbedbuildError(f"{device} is in use: {'; '.join(why)}",
                              hint="unmount it and its partitions (umount), swapoff, detach "
                              "loop devices on it (losetup -d), then write")
    return dev


def check_image(image: Path) -> os.stat_result:
    """The image must be a regular file (a result link's target is)."""
    try:
        st = image.stat()
    except FileNotFoundError:
        raise EmbedbuildError(f"image {image} does not exist",
                              hint="give the SD-card image file, or leave --image out to "
                              "build the board's") from None
    except OSError as e:
        raise EmbedbuildError(f"image {image} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise EmbedbuildError(f"image {image} is not a regular file",
                              hint="give the SD-card image file (BOARD-sd.img in a result)")
    return st


def check(image: Path, device: Path, max_size: int = DEFAULT_MAX_SIZE,
          mountinfo: Path = Path("/proc/self/mountinfo")) -> Device:
    """Every refusal, before anything is written; returns what would be overwritten."""
    img = check_image(image)
    dev = check_device(device, max_size, mountinfo)
    if dev.identity == (img.st_dev, img.st_ino):
        raise EmbedbuildError(f"{device} is the image itself: not written onto itself")
    if dev.kind == "block device":
        for loop in loops():
            if loop.rdev == dev.identity[1] and (img.st_dev, img.st_ino) in loop.files:
                raise EmbedbuildError(f"{device} is a loop device on the image itself: not "
                                      "written onto itself")
        if img.st_size > dev.size:
            raise EmbedbuildError(f"the image ({img.st_size:,} bytes) is larger than "
                                  f"{device} ({dev.size:,} bytes)")
    return dev


def _same(fd: int, dev: Device) -> bool:
    st = os.fstat(fd)
    ident = (0, st.st_rdev) if stat.S_ISBLK(st.st_mode) else (st.st_dev, st.st_ino)
    return ident == dev.identity


def write(image: Path, dev: Device) -> WriteReport:
    """Write the image at the start of the device, flush it to the device, then read it
    back past the page cache and compare. Exactly the image's size as checked is
    copied, to exactly the device that was checked."""
    want = hashlib.sha256()
    t0 = time.monotonic()
    # O_EXCL on a block device: the kernel itself refuses (EBUSY) one that is mounted or
    # held, closing the gap between the checks above and the write.
    excl = os.O_EXCL if dev.kind == "block device" else 0
    try:
        src = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise EmbedbuildError(f"image {image} cannot be read: {e.strerror}") from None
    try:
        size = os.fstat(src).st_size
        try:
            fd = os.open(dev.path, os.O_WRONLY | os.O_CLOEXEC | excl)
        except OSError as e:
            raise EmbedbuildError(f"{dev.path} cannot be opened for writing: {e.strerror}",
                                  hint="unmount it and stop what uses it") from None
        try:
            if not _same(fd, dev):
                raise EmbedbuildError(f"{dev.path} changed after it was checked: not written")
            left = size
            while left:
                chunk = os.read(src, min(CHUNK, left))
                if not chunk:
                    raise EmbedbuildError(f"image {image} shrank while it was written")
                want.update(chunk)
                left -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        os.close(src)
    t1 = time.monotonic()
    got = hashlib.sha256()
    fd = os.open(dev.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Drop what the write left in the page cache: the comparison reads the device.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        left = size
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
    return WriteReport(size, t1 - t0, time.monotonic() - t1)


def write_sd(image: Path, device: Path, *, max_size: int = DEFAULT_MAX_SIZE,
             confirm: Callable[[list[str]], bool] | None = None,
             mountinfo: Path = Path("/proc/self/mountinfo")) -> WriteReport:
    """Check, show what will be overwritten and ask ``confirm`` (None: do not ask), then
    write and verify."""
    dev = check(image, device, max_size, mountinfo)
    if confirm is not None and not confirm(
            ["about to overwrite:", *dev.describe(),
             f"with {image.name} ({image.stat().st_size:,} bytes)"]):
        raise EmbedbuildError("not written: not confirmed")
    return write(image, dev)
