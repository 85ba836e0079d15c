"""The SD-card image: an MBR (sfdisk), one FAT boot partition (mkfs.vfat, files put in
with mtools: no root, no loop device) holding the kernel, the DTB, the initramfs and
extlinux/extlinux.conf, and raw bootloader blobs at the offsets the board declares.

Reproducible: the disk identifier and the FAT volume serial are derived from the board
name, mkfs.vfat runs with --invariant, and every file and folder is stamped with one
fixed time (mcopy -m keeps it), so the same inputs give the same bytes in any store.
The image is read back before it is accepted: the table, then every file in the FAT.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

from embedbuild.bootcmd import EXTLINUX_CONF
from embedbuild.errors import StepError
from embedbuild.model.board import SECTOR, Board, SdCard
from embedbuild.step import Context, Step
from embedbuild.store import hash_file
from embedbuild.toolchain import version_line

# 1980-01-01 00:00:00 UTC: the FAT epoch, the earliest time a FAT entry can hold.
FAT_TIME = 315532800
MIB = 1 << 20
# Room for the FAT tables, the folders and cluster slack, beyond the files' bytes.
CLUSTER_SLACK = 32 * 1024
FS_OVERHEAD = 256 * 1024
# The MBR partition type for each FAT width mkfs.vfat chooses (LBA types past FAT12).
MBR_TYPE = {"FAT12": 0x01, "FAT16": 0x0E, "FAT32": 0x0C}
TOOL_ENV = {"MTOOLS_SKIP_CHECK": "1", "TZ": "UTC", "LC_ALL": "C"}


def identity(board: Board, what: str) -> int:
    """A fixed, non-zero 32-bit number for the board (disk identifier, volume serial)."""
    n = int.from_bytes(hashlib.sha256(f"embedbuild {what} {board.name}".encode()).digest()[:4],
                       "big")
    return n or 1


def fat_size(sizes: list[int], margin: int) -> int:
    """The boot partition's size: its files, FAT overhead and the margin, in whole MiB."""
    content = sum(-(-s // CLUSTER_SLACK) * CLUSTER_SLACK for s in sizes) + FS_OVERHEAD
    return -(-(content + margin) // MIB) * MIB


def mbr_table(sdcard: SdCard, disk_id: int, size: int, fat_type: int) -> str:
    """The sfdisk script of the card's partition table."""
    return (f"label: dos\nlabel-id: 0x{disk_id:08x}\nunit: sectors\n\n"
            f"start={sdcard.partition_offset // SECTOR}, size={size // SECTOR}, "
            f"type={fat_type:x}, bootable\n")


def read_mbr(data: bytes) -> dict:
    """The MBR of an image: disk identifier and the primary partitions (what sfdisk wrote,
    read back independently)."""
    if len(data) < SECTOR or data[510:512] != b"\x55\xaa":
        raise ValueError("no MBR boot signature (55 aa) in the first sector")
    parts = []
    for i in range(4):
        entry = data[446 + 16 * i: 462 + 16 * i]
        boot, ptype, start, count = entry[0], entry[4], *struct.unpack_from("<II", entry, 8)
        if ptype:
            parts.append({"number": i + 1, "bootable": boot == 0x80, "type": ptype,
                          "start": start * SECTOR, "size": count * SECTOR})
    return {"disk_id": struct.unpack_from("<I", data, 440)[0], "partitions": parts}


def fat_type(boot_sector: bytes) -> str:
    """FAT12, FAT16 or FAT32, from a FAT boot sector's file system type field."""
    for offset in (54, 82):
        name = boot_sector[offset: offset + 8].decode("ascii", "replace").strip()
        if name in MBR_TYPE:
            return name
    raise ValueError("not a FAT boot sector")


def sdimage_step(board: Board, files: dict[str, tuple[Step, str]], extlinux: str) -> Step:
    """Outputs ``image`` (BOARD-sd.img), ``layout`` (sdcard.json: what was read back) and
    ``extlinux`` (a copy of extlinux.conf). ``files``: name in the boot partition ->
    (step, output) of the file."""
    sd = board.sdcard
    assert sd is not None
    disk_id, serial = identity(board, "disk"), identity(board, "fat")
    deps = {f"file{i}": step for i, (step, _) in enumerate(files.values())}
    picks = {name: (f"file{i}", out) for i, (name, (_, out)) in enumerate(files.items())}
    raw = [r for r in sd.raw if r.file is not None]

    def build(ctx: Context) -> None:
        tree = ctx.scratch / "boot"
        (tree / "extlinux").mkdir(parents=True)
        for name, (dep, out) in picks.items():
            shutil.copyfile(ctx.input(dep, out), tree / name)
        (tree / EXTLINUX_CONF).write_text(extlinux)
        stamped = [*tree.rglob("*")]
        for p in stamped:
            os.utime(p, (FAT_TIME, FAT_TIME))
        size = fat_size([p.stat().st_size for p in stamped if p.is_file()], sd.margin)
        fat = ctx.scratch / "boot.fat"
        ctx.run.run(["mkfs.vfat", "-C", "--invariant", "-i", f"{serial:08x}", "-n", sd.label,
                     fat, str(size // 1024)], env=TOOL_ENV, what="mkfs.vfat")
        # One mcopy per entry, in a fixed order: the FAT's layout follows the order.
        for name in [*picks, "extlinux"]:
            ctx.run.run(["mcopy", "-s", "-m", "-i", fat, tree / name, "::/"], env=TOOL_ENV,
                        what=f"mcopy {name}")
        kind = fat_type(fat.read_bytes()[:SECTOR])
        image = ctx.output("image")
        with open(image, "wb") as f:
            f.truncate(sd.partition_offset + size)
        ctx.run.run(["sfdisk", "--no-reread", "--no-tell-kernel", "--wipe", "never", image],
                    stdin=mbr_table(sd, disk_id, size, MBR_TYPE[kind]).encode(), env=TOOL_ENV,
                    what="sfdisk")
        with open(image, "r+b") as f:
            f.seek(sd.partition_offset)
            with open(fat, "rb") as src:
                shutil.copyfileobj(src, f, MIB)
            for r in raw:
                assert r.file is not None
                data = r.file.read_bytes()
                if len(data) > r.size:  # changed since the board was loaded
                    raise StepError(f"{r.file} is {len(data):,} bytes, more than the "
                                    f"{r.size:,} reserved for {r.name}")
                f.seek(r.offset)
                f.write(data)
        layout = read_back(ctx, image, tree, [*picks, EXTLINUX_CONF], kind, size)
        layout["raw"] = [{"name": r.name, "offset": r.offset, "size": r.size,
                          "file": r.file.name if r.file else None,
                          "sha256": hash_file(r.file) if r.file else None,
                          "length": r.file.stat().st_size if r.file else None,
                          "env": r.env} for r in sd.raw]
        layout["extlinux"] = extlinux
        ctx.output("layout").write_text(json.dumps(layout, indent=1))
        shutil.copyfile(tree / EXTLINUX_CONF, ctx.output("extlinux"))

    def read_back(ctx: Context, image: Path, tree: Path, names: list[str], kind: str,
                  size: int) -> dict:
        """Check the image as written: the table sfdisk made, and every file the FAT holds
        copied back out (mtools reading the partition in place) and compared."""
        with open(image, "rb") as f:
            head = f.read(SECTOR)
        table = read_mbr(head)
        want = [{"number": 1, "bootable": True, "type": MBR_TYPE[kind],
                 "start": sd.partition_offset, "size": size}]
        if table["disk_id"] != disk_id or table["partitions"] != want:
            raise StepError(f"the partition table read back is not the one asked for: "
                            f"{table} (wanted disk id 0x{disk_id:08x}, {want})")
        out = ctx.scratch / "readback"
        files = {}
        for name in names:
            dest = out / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            ctx.run.run(["mcopy", "-n", "-i", f"{image}@@{sd.partition_offset}", f"::/{name}",
                         dest], env=TOOL_ENV, what=f"reading back {name}")
            if dest.read_bytes() != (tree / name).read_bytes():
                raise StepError(f"{name} read back from the SD image differs from the file")
            files[name] = {"size": dest.stat().st_size, "sha256": hash_file(dest)}
        part = {**want[0], "filesystem": kind.lower(), "label": sd.label,
                "serial": f"{serial:08x}", "files": files}
        return {"image": image.name, "size": image.stat().st_size, "table": sd.table,
                "disk_id": f"0x{disk_id:08x}", "partitions": [part]}

    return Step(
        kind="sdimage",
        name=f"{board.name}-sdimage",
        version=1,
        inputs={
            "sdcard": sd.model_dump(mode="json", exclude={"raw"}),
            "raw": [r.model_dump(mode="json", exclude={"file"})
                    | {"sha256": hash_file(r.file) if r.file else None} for r in sd.raw],
            "files": {name: out for name, (_, out) in files.items()},
            "extlinux": extlinux,
            "disk_id": disk_id,
            "serial": serial,
            "tools": {t: version_line(t) for t in ("mcopy", "sfdisk")}
            | {"mkfs.vfat": mkfs_version()},
        },
        deps=deps,
        build=build,
        outputs={"image": f"{board.name}-sd.img", "layout": "sdcard.json",
                 "extlinux": "extlinux.conf"},
    )


def mkfs_version() -> str:
    """mkfs.vfat's version line (it has no --version; its usage text starts with it)."""
    if shutil.which("mkfs.vfat") is None:
        return version_line("mkfs.vfat")  # raises the "not found, run tools/setup" error
    out = subprocess.run(["mkfs.vfat", "--help"], capture_output=True, text=True)
    return next((line for line in (out.stdout + out.stderr).splitlines()
                 if line.startswith("mkfs.fat")), "mkfs.vfat")
