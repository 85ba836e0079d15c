"""TFTP boot through a real U-Boot in QEMU, over a tap in a network namespace, read
on the real console; and the failures U-Boot and the kernel report."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import EMBEDBUILD, HELLO_READY, build_hello_initramfs, cli, qemu_target

from embedbuild.bootcmd import tftp_boot as tftp_boot_commands
from embedbuild.load import load_board
from embedbuild.rig.bootsource import BootSource, TftpBoot
from embedbuild.rig.uboot import BootError
from embedbuild.store import cache_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


def _qemus() -> set[str]:
    out = subprocess.run(["pgrep", "-f", "qemu-system-"], capture_output=True, text=True).stdout
    return set(out.split())


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_tftp_boot_reaches_init(arm_result: Path, hello_initramfs: Path, tmp_path: Path):
    board = load_board("qemu-arm-virt")
    with qemu_target(board, tmp_path, arm_result) as target:
        report = target.boot(TftpBoot(hello_initramfs), HELLO_READY)
        lines = report.lines()
        names = [t.filename for t in report.transfers]
        assert names == ["zImage", "hello.cpio"]
        assert all(t.ok for t in report.transfers)
        # U-Boot took the board's block size: it reassembles IP fragments (a U-Boot
        # without IP_DEFRAG asks for 1,468-byte blocks and loads at a third the rate).
        assert {(t.blksize, t.window) for t in report.transfers} == \
            {(board.uboot.tftp_blocksize, board.uboot.tftp_windowsize)}
    log = (tmp_path / "console.log").read_text()
    assert "Bytes transferred = " in log
    assert re.search(r"embedbuild-test-init: running on armv7l 6\.1\.", log)
    assert any("power on to ready" in line for line in lines)
    # The timeline, on one time axis: each stage ends before the next one starts.
    order = ["power on", "power on to U-Boot prompt", "U-Boot network setup", "tftp zImage",
             "tftp hello.cpio", "boot command", "kernel to /init", "init to ready"]
    stages = {e.name: e for e in report.timeline}
    assert [e.name for e in report.timeline if e.name in order] == order
    for a, b in itertools.pairwise(order):
        assert stages[a].end <= stages[b].start + 1e-3, (a, b)
    data = json.loads((tmp_path / "boot.json").read_text())
    assert [t["file"] for t in data["transfers"]] == ["zImage", "hello.cpio"]
    assert all(0 < t["start"] < t["end"] < data["stages"][-1]["end"] for t in data["transfers"])


def test_a_tftp_window_larger_than_u_boots_receive_ring_still_loads(
        arm_result: Path, hello_initramfs: Path, tmp_path: Path):
    """4 blocks of 16,268 bytes are 44 frames, more than the 32 receive buffers of
    U-Boot's virtio-net: the device finds the ring full and waits to be told there is
    room again (u-boot-virtio-net-rx-kick.patch). A window and its retransmission on a
    busy host come to the same; without the notice U-Boot heard nothing more."""
    board = load_board("qemu-arm-virt")
    board = board.model_copy(update={"uboot": board.uboot.model_copy(
        update={"tftp_blocksize": 16268, "tftp_windowsize": 4})})
    with qemu_target(board, tmp_path, arm_result) as target:
        report = target.boot(TftpBoot(hello_initramfs), HELLO_READY)
    assert [(t.filename, t.ok, t.blksize, t.window) for t in report.transfers] == \
        [("zImage", True, 16268, 4), ("hello.cpio", True, 16268, 4)]


class MissingFile(BootSource):
    """A boot source whose commands load a file the server does not have."""

    name = "missing-file"

    def commands(self, target) -> list[str]:
        return tftp_boot_commands(target.board, "zImage", "missing.cpio")


def test_missing_file_is_reported(arm_result: Path, tmp_path: Path):
    board = load_board("qemu-arm-virt")
    with qemu_target(board, tmp_path, arm_result) as target, pytest.raises(BootError) as e:
        target.boot(MissingFile(), HELLO_READY, timeout=30)
    assert "TFTP error: 'File not found' (1)" in str(e.value)
    assert "missing.cpio" in str(e.value)


def test_corrupted_ramdisk_is_reported(arm_result: Path, hello_initramfs: Path, tmp_path: Path):
    rd = tmp_path / "rd.uImage"
    subprocess.run(["mkimage", "-A", "arm", "-O", "linux", "-T", "ramdisk", "-C", "none",
                    "-n", "test", "-d", hello_initramfs, rd], check=True, capture_output=True)
    data = bytearray(rd.read_bytes())
    data[64 + 1000] ^= 0xFF  # one bit pattern in the payload: the data CRC must catch it
    rd.write_bytes(data)
    with qemu_target(load_board("qemu-arm-virt"), tmp_path, arm_result) as target:
        uboot = target.prompt([rd])
        uboot.check("tftpboot 0x40400000 zImage")
        uboot.check("tftpboot 0x44000000 rd.uImage")
        with pytest.raises(BootError) as e:
            uboot.boot("bootz 0x40400000 0x44000000 0x40000000")
    assert "Bad Data CRC" in str(e.value)


def test_kernel_panic_is_detected_at_once(arm_result: Path, tmp_path: Path):
    no_init = build_hello_initramfs(tmp_path, with_init=False)
    board = load_board("qemu-arm-virt")
    t0 = time.monotonic()
    with pytest.raises(BootError) as e, qemu_target(board, tmp_path / "w", arm_result) as target:
        target.boot(TftpBoot(no_init), HELLO_READY, timeout=120)
    assert "Kernel panic - not syncing" in str(e.value)
    # found by its message, long before the 120 s stage timeout
    assert time.monotonic() - t0 < 60


def test_cli_boot_and_cleanup(arm_result: Path, hello_initramfs: Path, session_store: Path):
    before, qemus = _netns_names(), _qemus()
    r = cli("boot", "qemu-arm-virt", "--qemu", "--initrd", str(hello_initramfs),
            "--ready", HELLO_READY, "--no-console", store=session_store, timeout=300)
    assert r.code == 0, r.err
    assert "power on to ready" in r.err and "tftp zImage" in r.err
    assert _netns_names() == before
    assert _qemus() <= qemus


def test_cli_boot_ctrl_c_cleans_up(arm_result: Path, session_store: Path):
    before, qemus = _netns_names(), _qemus()
    p = subprocess.Popen([EMBEDBUILD, "boot", "qemu-arm-virt", "--qemu",
                          "--ready", "never-printed", "--timeout", "120", "--no-console"],
                         env={**os.environ, "EMBEDBUILD_STORE": str(session_store)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _qemus() - qemus:
        time.sleep(0.2)
    # Ctrl-C once U-Boot runs (its banner in this boot's console log), whatever the speed.
    log = cache_dir("EMBEDBUILD_BENCH", "bench") / "qemu-arm-virt" / "run" / "console.log"
    while time.monotonic() < deadline and not (log.is_file() and "U-Boot" in log.read_text()):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode != 0 and "Traceback" not in err
    assert _netns_names() == before
    assert _qemus() <= qemus


def test_boot_without_root_says_what_to_do(tmp_path: Path):
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        EMBEDBUILD, "--store", str(tmp_path / "s"), "boot", "qemu-arm-virt",
                        "--qemu"], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "needs root" in r.stderr and "sudo" in r.stderr and "Traceback" not in r.stderr
