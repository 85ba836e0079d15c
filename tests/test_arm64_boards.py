"""The arm64 boards: the ODROID-GO Advance (RK3326) built and checked (its DTB against
the drivers its kernel has), and qemu-aarch64-virt, which boots that very kernel
binary in QEMU through Debian's qemu_arm64 U-Boot over TFTP and passes the rig tests.

CI cost: one arm64 kernel (both boards share it), the aarch64 userland, the in-tree DTB,
and one boot with the rig tests."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import cli, manifest

from embedbuild.load import load_board
from embedbuild.plan import plan_board
from embedbuild.store import Store

pytestmark = pytest.mark.slow

# The arm64 Image header: "ARM\x64" at offset 0x38 (Documentation/arm64/booting.rst).
ARM64_MAGIC = b"ARM\x64"


@pytest.fixture(scope="module")
def go2_result(session_store: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("go2")
    r = cli("build", "odroid-go2", "--out-link", str(out / "result"), store=session_store)
    assert r.code == 0, r.err
    return (out / "result").resolve()


@pytest.fixture(scope="module")
def virt_result(session_store: Path, go2_result: Path, tmp_path_factory) -> tuple[Path, str]:
    """qemu-aarch64-virt built after odroid-go2: returns the result and the build's output."""
    out = tmp_path_factory.mktemp("virt")
    r = cli("build", "qemu-aarch64-virt", "--out-link", str(out / "result"),
            store=session_store)
    assert r.code == 0, r.err
    return (out / "result").resolve(), r.out + r.err


def test_odroid_go2_result_agrees_with_manifest(go2_result: Path):
    m = manifest(go2_result)
    assert m.arch == "arm64" and m.kernel.file == "Image"
    roles = {name: f.role for name, f in m.files.items()}
    assert roles["Image"] == "kernel" and roles["rk3326-odroid-go2.dtb"] == "dtb"
    assert m.with_role("initramfs") == ["initramfs.cpio.gz"]
    assert (go2_result / "Image").read_bytes()[0x38:0x3C] == ARM64_MAGIC
    assert m.uboot.tftpboot[-1] == "booti 0x280000 0xa200000:${filesize} 0x8300000"
    config = (go2_result / "kernel.config").read_text()
    for sym in ("ARCH_ROCKCHIP", "CLK_PX30", "SERIAL_8250_DW", "MMC_DW_ROCKCHIP", "USB_DWC2",
                "USB_NET_AX88179_178A", "USB_RTL8152", "VIRTIO_NET", "SERIAL_AMBA_PL011"):
        assert f"CONFIG_{sym}=y\n" in config, sym


def test_odroid_go2_dtb_is_checked_against_its_kernel(go2_result: Path, session_store: Path):
    plan = plan_board(load_board("odroid-go2"))
    check = plan.steps["dtb-check"]
    report = json.loads((Store(session_store).item_path(check.key, check.name)
                         / check.output_path("report")).read_text())
    by_node = {r["node"]: r for r in report}
    assert by_node["/serial@ff160000"]["driver"] == "drivers/tty/serial/8250/8250_dw.c"
    assert by_node["/mmc@ff370000"]["driver"] == "drivers/mmc/host/dw_mmc-rockchip.c"
    assert by_node["/gpu@ff400000"] == {"node": "/gpu@ff400000",
                                         "compatible": ["rockchip,px30-mali", "arm,mali-bifrost"],
                                         "driver": None, "unserved": "no display, so no GPU"}
    # Nothing else is left without the driver the tree has for it.
    unserved = load_board("odroid-go2").kernel.unserved
    assert [r["node"] for r in report if r["driver"] is None and "unserved" in r] == \
        [n for n in by_node if n in unserved]


def test_size_reports_kernel_and_initramfs(go2_result: Path, session_store: Path):
    r = cli("size", "odroid-go2", store=session_store)
    assert r.code == 0, r.err
    m = manifest(go2_result)
    kernel = next(line for line in r.out.splitlines() if line.startswith("kernel (Image)"))
    assert kernel.split()[-1] == f"{m.files['Image'].size:,}"
    initramfs = next(line for line in r.out.splitlines() if line.startswith("initramfs "))
    assert initramfs.split()[-1] == f"{m.files['initramfs.cpio.gz'].size:,}"


def test_qemu_virt_boots_the_very_image_of_odroid_go2(virt_result, go2_result: Path):
    result, output = virt_result
    a, b = manifest(go2_result), manifest(result)
    assert b.files["Image"].sha256 == a.files["Image"].sha256
    # One store item: both results link the same file, and the second build made no kernel.
    assert (result / "Image").stat().st_ino == (go2_result / "Image").stat().st_ino
    assert not re.search(r"built \S+-kernel in ", output), output
    assert not any(f.role == "dtb" for f in b.files.values())  # QEMU supplies the DTB
    assert b.uboot.tftpboot[-1] == "booti 0x40400000 0x44000000:${filesize} 0x40000000"


@pytest.mark.skipif(os.geteuid() != 0, reason="the QEMU bench network needs root")
def test_qemu_virt_tftp_boots_and_passes_the_rig_tests(virt_result, session_store: Path):
    r = cli("test", "qemu-aarch64-virt", "--", "-v", "-p", "no:cacheprovider",
            store=session_store, timeout=3600)
    assert r.code == 0, r.out[-4000:] + r.err[-2000:]
    # uname -m over the console is aarch64 (tests/system: UNAME_M by the board's arch).
    assert re.search(r"test_machine PASSED", r.out), r.out[-2000:]
    assert re.search(r"\b1[0-9] passed\b", r.out), r.out[-2000:]
    assert "failed" not in r.out.splitlines()[-1]
