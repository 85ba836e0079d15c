"""Flashing, the fast part: the flash layout checked at load, the refusals made before
anything is sent, the exact command sequences (--dry-run) and the FIT image parsed back."""

from __future__ import annotations

import re
import subprocess
import zlib
from pathlib import Path

import pytest
from conftest import cli, run_main

from embedbuild import bootcmd
from embedbuild.errors import StepError
from embedbuild.load import load_board
from embedbuild.model.board import Flash
from embedbuild.steps import fit


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _error_line(r) -> str:
    assert r.code == 1 and "Traceback" not in r.err, r.err
    return r.own_err.splitlines()[0]


@pytest.mark.parametrize("old,new,message", [
    ('name = "firmware-a"\noffset = 0x40000', 'name = "firmware-a"\noffset = 0x30000',
     "partition 'firmware-a' at 0x30000 overlaps the one before it (which ends at 0x40000)"),
    ('name = "firmware-a"\noffset = 0x40000', 'name = "firmware-a"\noffset = 0x60000',
     "partition 'firmware-a' offset 0x60000 is not a multiple of the erase block 0x40000"),
    ("size = 0xfc0000", "size = 0xfb0000",
     "partition 'firmware-a' size 0xfb0000 is not a multiple of the erase block 0x40000"),
    ("offset = 0x1000000\nsize = 0x1000000", "offset = 0x1000000\nsize = 0x4000000",
     "partition 'firmware-b' ends at 0x5000000, past the end of the flash (0x4000000)"),
    ('dialect = "nor"', 'dialect = "nand"', "dialect"),
])
def test_bad_layouts_are_refused_at_load(boards: Path, tmp_path: Path, old: str, new: str,
                                         message: str):
    _replace(boards / "qemu-arm-virt" / "board.toml", old, new)
    r = run_main("show", str(boards / "qemu-arm-virt"), store=tmp_path / "s")
    line = _error_line(r)
    assert message in line and "board.toml" in line


def test_ap_ac_lite_layout_is_the_known_one():
    flash = load_board("ap-ac-lite").flash
    assert flash is not None and flash.erase_block == 0x10000 and flash.mapped == 0x9F000000
    layout = {p.name: (p.offset, p.size, p.read_only) for p in flash.partitions}
    assert layout == {"u-boot": (0, 0x60000, True), "u-boot-env": (0x60000, 0x10000, True),
                      "kernel0": (0x70000, 0x790000, False),
                      "kernel1": (0x800000, 0x790000, False), "bs": (0xF90000, 0x20000, True),
                      "cfg": (0xFB0000, 0x40000, True), "art": (0xFF0000, 0x10000, True)}


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "image.bin"
    p.write_bytes(bytes(range(256)) * 12288)  # 3 MiB
    return p


def _flash(board: str, *args: str, tmp_path: Path, process: bool = False) -> object:
    """`embedbuild flash` (in this process; in one of its own with ``process``)."""
    run = cli if process else run_main
    return run("flash", board, *args, store=tmp_path / "store",
               env={"EMBEDBUILD_BENCH": str(tmp_path / "bench")})


@pytest.mark.parametrize("partition", ["art", "u-boot", "u-boot-env", "cfg", "bs"])
def test_ap_ac_lite_read_only_partitions_are_refused(partition: str, image: Path,
                                                     tmp_path: Path):
    r = _flash("ap-ac-lite", "--partition", partition, "--dry-run", "--image", str(image),
               tmp_path=tmp_path)
    assert f"partition '{partition}' of ap-ac-lite is read-only" in _error_line(r)
    assert r.out == ""


def test_unknown_partition_lists_the_known_ones(image: Path, tmp_path: Path):
    r = _flash("qemu-arm-virt", "--partition", "kernel", "--qemu", "--image", str(image),
               tmp_path=tmp_path)
    assert "unknown partition 'kernel' for qemu-arm-virt" in _error_line(r)
    assert "known partitions: u-boot-env, firmware-a, firmware-b" in r.err
    assert not (tmp_path / "bench").exists()  # nothing was powered


def test_image_one_byte_too_large_is_refused_before_power(tmp_path: Path):
    size = load_board("qemu-arm-virt").flash.partition("firmware-a").size
    big = tmp_path / "big.itb"
    with open(big, "wb") as f:
        f.truncate(size + 1)
    r = _flash("qemu-arm-virt", "--partition", "firmware-a", "--qemu", "--image", str(big),
               tmp_path=tmp_path)
    assert f"image is {size + 1:,} bytes, 1 more than partition 'firmware-a'" in _error_line(r)
    assert not (tmp_path / "bench" / "qemu-arm-virt" / "flash.img").exists()
    with open(big, "wb") as f:
        f.truncate(size)  # exactly the partition: accepted
    r = _flash("qemu-arm-virt", "--partition", "firmware-a", "--dry-run", "--image", str(big),
               tmp_path=tmp_path)
    assert r.code == 0, r.err


def test_flash_without_a_bench_says_what_to_give(image: Path, tmp_path: Path):
    r = _flash("qemu-arm-virt", "--partition", "firmware-a", "--image", str(image),
               tmp_path=tmp_path, process=True)
    assert "--qemu or --serial" in _error_line(r)


def test_set_bootcmd_needs_a_saveenv_partition(image: Path, tmp_path: Path):
    r = _flash("ap-ac-lite", "--partition", "kernel0", "--dry-run", "--set-bootcmd",
               "--image", str(image), tmp_path=tmp_path)
    assert "declares no U-Boot environment partition that saveenv may write" in _error_line(r)


def _ranges(lines: list[str]) -> list[tuple[str, int, int]]:
    """(command, start, end) of every command that touches an address range."""
    out = []
    for line in lines:
        cmd = line.split("#")[0].split()
        if not cmd:
            continue
        if cmd[0] in ("protect", "erase"):
            start = int(cmd[-2], 16)
            out.append((cmd[0], start, start + int(cmd[-1].lstrip("+"), 16)))
        elif cmd[0] == "cp.b":
            start = int(cmd[2], 16)
            out.append(("cp.b", start, start + int(cmd[3], 16)))
        elif cmd[0] == "crc32":
            start = int(cmd[1], 16)
            out.append(("crc32", start, start + int(cmd[2], 16)))
    return out


def test_ap_ac_lite_dry_run_touches_only_the_firmware_partition(image: Path, tmp_path: Path):
    r = _flash("ap-ac-lite", "--partition", "kernel0", "--dry-run", "--image", str(image),
               tmp_path=tmp_path)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    crc = f"{zlib.crc32(image.read_bytes()):08x}"
    flash_ops = [(c, a, b) for c, a, b in _ranges(lines) if a >= 0x9F000000]
    assert flash_ops and all(0x9F070000 <= a < b <= 0x9F800000 for _, a, b in flash_ops)
    assert ("erase", 0x9F070000, 0x9F800000) in flash_ops  # exactly the partition
    order = [line.split()[0] for line in lines]
    erase, write = order.index("erase"), order.index("cp.b")
    # The RAM copy's size and crc32 before the erase; the flash's crc32 after the write.
    before = lines[:erase]
    assert any(line.startswith("printenv filesize") and "0x300000" in line for line in before)
    assert any(line.startswith("crc32 0x81000000 0x300000") and crc in line for line in before)
    assert any(line.startswith("crc32 0x9f070000 0x300000") and crc in line
               for line in lines[write:])
    # And the rest of the partition must read erased.
    tail = 0x790000 - 0x300000
    assert f"crc32 0x9f370000 0x{tail:x}" in r.out
    assert f"{bootcmd.erased_crc(tail):08x}" in r.out


def test_erased_crc_is_the_crc_of_0xff_bytes():
    for n in (1, 4096, (1 << 20) + 3):
        assert bootcmd.erased_crc(n) == zlib.crc32(b"\xff" * n)


def test_sf_dialect_reads_back_through_ram():
    board = load_board("ap-ac-lite")
    flash = Flash.model_validate(board.flash.model_dump() | {
        "dialect": "sf", "mapped": None, "readback_addr": 0x82000000, "sf_probe": "0:0"})
    board = board.model_copy(update={"flash": flash})
    part = flash.partition("kernel0")
    texts = [c.text for c in bootcmd.flash_write(board, part, "uImage", 0x1000, 0x1234)]
    assert texts[3:8] == ["sf probe 0:0", "sf erase 0x70000 0x790000",
                          "sf write 0x81000000 0x70000 0x1000",
                          "sf read 0x82000000 0x70000 0x1000", "crc32 0x82000000 0x1000"]
    assert bootcmd.flash_boot(board, part, 0x1000)[-3:] == [
        "sf probe 0:0", "sf read 0x82000000 0x70000 0x1000", "bootm 0x82000000"]


def test_boot_from_flash_commands():
    arm = load_board("qemu-arm-virt")
    assert bootcmd.flash_boot(arm, arm.flash.partition("firmware-a"), 100) == [
        "setenv bootargs 'console=ttyAMA0,115200 i6300esb.heartbeat=10 loglevel=5 mem=127M "
        "fw_devlink=off'",
        "bootm 0x4040000#conf-1 0x4040000#conf-1 0x40000000"]
    ap = load_board("ap-ac-lite")
    assert bootcmd.flash_boot(ap, ap.flash.partition("kernel0"), 100)[-1] == "bootm 0x9f070000"


def _mkfit(tmp_path: Path) -> tuple[Path, fit.FitDescription, dict[str, bytes]]:
    board = load_board("qemu-arm-virt")
    data = {"kernel-1": b"K" * 5000, "ramdisk-1": b"R" * 3000}
    (tmp_path / "zImage").write_bytes(data["kernel-1"])
    (tmp_path / "initramfs.cpio.gz").write_bytes(data["ramdisk-1"])
    desc = fit.describe(board, "zImage", "initramfs.cpio.gz")
    (tmp_path / "x.its").write_text(desc.its())
    subprocess.run(["mkimage", "-f", tmp_path / "x.its", tmp_path / "x.itb"], check=True,
                   capture_output=True)
    return tmp_path / "x.itb", desc, data


def test_fit_is_parsed_back_and_checked(tmp_path: Path):
    itb, desc, data = _mkfit(tmp_path)
    facts = fit.verify(itb, desc, data)
    assert facts["images"]["kernel-1"]["load"] == "0x40400000"
    assert facts["images"]["ramdisk-1"]["load"] == "0x44000000"
    assert facts["configurations"]["conf-1"] == {"kernel": "kernel-1", "ramdisk": "ramdisk-1",
                                                 "signatures": []}
    listing = subprocess.run(["dumpimage", "-l", itb], capture_output=True, text=True).stdout
    assert re.search(r"Hash algo:\s+sha256", listing)
    blob = bytearray(itb.read_bytes())
    blob[blob.index(b"K" * 100) + 10] ^= 1  # one bit of the kernel: its hash must disagree
    itb.write_bytes(blob)
    with pytest.raises(StepError) as e:
        fit.verify(itb, desc, {**data, "kernel-1": bytes(blob[blob.index(b"K" * 100):][:5000])})
    assert "kernel-1 has no matching sha256 hash" in str(e.value)


def test_flash_image_is_the_fit_or_the_uimage():
    from embedbuild.plan import plan_board

    for board, name in (("qemu-arm-virt", "qemu-arm-virt.itb"), ("ap-ac-lite", "uImage")):
        plan = plan_board(load_board(board))
        assert plan.result.inputs["manifest"]["flash_image"] == name
