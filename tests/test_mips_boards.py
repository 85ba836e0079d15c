"""The big-endian MIPS boards: the UniFi AP AC Lite image (built, checked, not booted:
no QEMU model exists) and qemu-malta-be, the same toolchain, userspace and lzma
uImage packaging booted in QEMU through a U-Boot embedbuild built.

The size report's tests reuse the ap-ac-lite build: `size` reads its result (seconds),
and the over-budget build changes only the budget, so only the result step is made
again (seconds). Measured on this 2-core machine under a load of about 15 (nice 15):
the size table 47 s, the partition share 22 s, over budget 18 s; the build itself
pays the kernel-parts step once (91 s under that load, about the uImage's own lzma)."""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from pathlib import Path

import pytest
from conftest import cli, manifest

from embedbuild import fdt, uimage
from embedbuild.load import load_board
from embedbuild.plan import plan_board
from embedbuild.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ap_result(session_store: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ap")
    r = cli("build", "ap-ac-lite", "--out-link", str(out / "result"), store=session_store)
    assert r.code == 0, r.err
    return (out / "result").resolve()


def test_ap_ac_lite_image_agrees_with_manifest(ap_result: Path):
    m = manifest(ap_result)
    assert m.kernel.file == "uImage"
    assert (m.kernel.load, m.kernel.entry) == ("0x80060000", "0x80060000")
    listing = subprocess.run(["mkimage", "-l", ap_result / "uImage"], capture_output=True,
                             text=True, check=True).stdout
    assert re.search(r"Image Type:\s+MIPS Linux Kernel Image \(lzma compressed\)", listing)
    assert re.search(r"Load Address:\s+80060000", listing)
    assert re.search(r"Entry Point:\s+80060000", listing)
    h = uimage.parse((ap_result / "uImage").read_bytes())
    assert h.header_crc_ok and h.data_crc_ok and h.arch == "mips" and h.compression == "lzma"


def test_ap_ac_lite_dtb_follows_the_kernel(ap_result: Path):
    data = (ap_result / "uImage").read_bytes()[64:]
    payload = subprocess.run(["xz", "--format=lzma", "-dc"], input=data, capture_output=True,
                             check=True).stdout
    dtb = (ap_result / "ap-ac-lite.dtb").read_bytes()
    assert dtb[:4] == b"\xd0\x0d\xfe\xed"
    assert payload.endswith(dtb)
    # What precedes it is the raw kernel: it starts with the jump to kernel_entry.
    assert payload[: len(payload) - len(dtb)].count(b"\xd0\x0d\xfe\xed") == 0
    paths = {n.path for n in fdt.nodes(dtb)}
    assert "/ahb/spi@1f000000/flash@0/partitions/partition@70000" in paths


def test_ap_ac_lite_fits_and_size_shows_the_partition_share(ap_result: Path,
                                                            session_store: Path):
    assert (ap_result / "uImage").stat().st_size <= 4 * 2**20
    r = cli("size", "ap-ac-lite", store=session_store)
    assert r.code == 0, r.err
    assert "share of the kernel0 partition (7,929,856 bytes)" in r.out


def _numbers(line: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\b\d[\d,]*\b", line)]


def test_ap_ac_lite_size_shows_where_each_kib_went(ap_result: Path, session_store: Path):
    """The uImage by kernel folder (from the linker map), built-in initramfs component,
    DTB and header: the shares add up to the file, and it is within the budget."""
    r = cli("size", "ap-ac-lite", store=session_store)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    size = (ap_result / "uImage").stat().st_size
    m = manifest(ap_result)
    parts = m.kernel_parts
    assert sum(p.image for p in parts) == size
    names = {p.part for p in parts}
    assert {"net/ipv4", "drivers/net", "drivers/mtd", "arch/mips/kernel", "busybox",
            "package dropbear", "device tree (appended)", "uImage header"} <= names
    # The raw kernel parts and the built-in initramfs are vmlinux.bin, byte for byte;
    # the DTB is the one appended.
    kernel_raw = sum(p.raw for p in parts if p.group in ("kernel", "initramfs"))
    step = plan_board(load_board("ap-ac-lite")).steps["kernel"]
    item = Store(session_store).item_path(step.key, step.name)
    assert kernel_raw == (item / "vmlinux.bin").stat().st_size
    dtb = next(p for p in parts if p.part == "device tree (appended)")
    assert dtb.raw == (ap_result / "ap-ac-lite.dtb").stat().st_size
    row = next(line for line in lines if line.strip().startswith("package dropbear"))
    assert _numbers(row)[0] == next(c.compressed for c in m.initramfs
                                    if c.component == "package dropbear")
    budget = next(line for line in lines if line.startswith("budget: "))
    assert budget == (f"budget: {size:,} of 2,621,440 bytes ({100 * size / 2621440:.1f}%), "
                      f"{2621440 - size:,} left")


def test_ap_ac_lite_over_its_budget_fails_and_size_says_by_how_much(
        boards: Path, tmp_path: Path, session_store: Path, ap_result: Path):
    toml = boards / "ap-ac-lite" / "board.toml"
    toml.write_text(toml.read_text().replace('budget = "2.5 MiB"', 'budget = "1 MiB"'))
    line = next(i for i, t in enumerate(toml.read_text().splitlines(), 1)
                if t.startswith("budget ="))
    size = (ap_result / "uImage").stat().st_size
    r = cli("build", str(boards / "ap-ac-lite"), "--out-link", str(tmp_path / "r"),
            store=session_store)
    assert r.code == 1 and "Traceback" not in r.err
    assert f"board.toml:{line}: board ap-ac-lite: a boot loads {size:,} bytes, " \
        f"{size - 2**20:,} over its budget of 1,048,576" in " ".join(r.err.split())
    assert not (tmp_path / "r").exists()
    r = cli("size", str(boards / "ap-ac-lite"), store=session_store)
    assert r.code == 1 and "Traceback" not in r.err
    assert f"budget: {size:,} of 1,048,576 bytes" in r.out and \
        f"{size - 2**20:,} over" in r.out
    assert "busybox" in r.out  # the table that says where the bytes went is there


def test_ap_ac_lite_flash_dry_run_writes_the_uimage_to_firmware_only(ap_result: Path,
                                                                     session_store: Path):
    from test_flash import _ranges

    size = (ap_result / "uImage").stat().st_size
    r = cli("flash", "ap-ac-lite", "--partition", "kernel0", "--dry-run", store=session_store)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    crc = f"{zlib.crc32((ap_result / 'uImage').read_bytes()):08x}"
    ops = [(c, a, b) for c, a, b in _ranges(lines) if a >= 0x9F000000]
    assert ops and all(0x9F070000 <= a < b <= 0x9F800000 for _, a, b in ops)
    erase = next(i for i, line in enumerate(lines) if line.startswith("erase "))
    write = next(i for i, line in enumerate(lines) if line.startswith("cp.b "))
    assert any(f"crc32 0x81000000 0x{size:x}" in line and crc in line for line in lines[:erase])
    assert any(f"crc32 0x9f070000 0x{size:x}" in line and crc in line for line in lines[write:])
    for part in ("art", "u-boot", "u-boot-env", "cfg"):
        r = cli("flash", "ap-ac-lite", "--partition", part, "--dry-run", store=session_store)
        assert r.code == 1 and f"partition '{part}' of ap-ac-lite is read-only" in r.err


def test_ap_ac_lite_initramfs_is_built_in(ap_result: Path):
    m = manifest(ap_result)
    assert not m.with_role("initramfs")
    assert m.uboot.tftpboot[-1] == "bootm 0x81000000"
    config = (ap_result / "kernel.config").read_text()
    assert 'CONFIG_INITRAMFS_SOURCE="initramfs.cpio"' in config


def test_dropping_a_nodes_driver_fails_naming_the_node(boards: Path, tmp_path: Path,
                                                       session_store: Path):
    frag = boards / "ap-ac-lite" / "kernel.config"
    frag.write_text(frag.read_text().replace("CONFIG_SPI_AR934X=y\n", ""))
    r = cli("build", str(boards / "ap-ac-lite"), "--out-link", str(tmp_path / "r"),
            store=session_store)
    assert r.code == 1 and "Traceback" not in r.err
    assert "node /ahb/spi@1f000000 (compatible \"qca,ar934x-spi\") has no driver" in r.err
    assert "enable CONFIG_SPI_AR934X" in r.err


@pytest.mark.skipif(os.geteuid() != 0, reason="the QEMU bench network needs root")
def test_malta_boots_through_its_built_uboot_and_passes_the_rig_tests(session_store: Path):
    r = cli("test", "qemu-malta-be", "--", "-q", "-p", "no:cacheprovider",
            store=session_store, timeout=3600)
    assert r.code == 0, r.out[-4000:] + r.err[-2000:]
    assert re.search(r"\b1[0-9] passed\b", r.out), r.out[-2000:]
    assert "failed" not in r.out.splitlines()[-1]


def test_malta_manifest_and_bootloader(session_store: Path, tmp_path: Path):
    r = cli("build", "qemu-malta-be", "--out-link", str(tmp_path / "r"), store=session_store)
    assert r.code == 0, r.err
    m = manifest(tmp_path / "r")
    assert m.files["u-boot.bin"].role == "bootloader"
    assert m.kernel.compression == "lzma" and m.kernel.load == "0x80100000"
    config = (tmp_path / "r").resolve().parent
    uboot_cfg = next(config.glob("*-qemu-malta-be-uboot")) / "u-boot.config"
    assert "CONFIG_LZMA=y" in uboot_cfg.read_text()


def test_image_must_fit_the_firmware_partition(boards: Path, tmp_path: Path,
                                               session_store: Path, ap_result: Path):
    toml = boards / "ap-ac-lite" / "board.toml"
    text = toml.read_text()
    assert 'name = "kernel0"\noffset = 0x070000\nsize = 0x790000' in text
    toml.write_text(text.replace('name = "kernel0"\noffset = 0x070000\nsize = 0x790000',
                                 'name = "kernel0"\noffset = 0x070000\nsize = 0x100000'))
    r = cli("build", str(boards / "ap-ac-lite"), "--out-link", str(tmp_path / "r"),
            store=session_store)
    assert r.code == 1 and "Traceback" not in r.err
    assert "more than the kernel0 partition (1,048,576 bytes)" in r.err
