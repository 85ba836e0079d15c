"""TFTP boot through a real U-Boot in QEMU, over a tap in a network namespace, read
on the real console; and the failures U-Boot and the kernel report."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import EMBEDBUILD, HELLO_READY, build_hello_initramfs, cli

from embedbuild.bootcmd import tftp_boot as tftp_boot_commands
from embedbuild.load import load_board
from embedbuild.rig.boot import BootReport, qemu_target, stage_files, tftp_boot
from embedbuild.rig.console import Console
from embedbuild.rig.netns import BenchNetwork
from embedbuild.rig.qemu import QemuBoard
from embedbuild.rig.tftp import TftpServer
from embedbuild.rig.uboot import BootError, UBootDriver
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
    with qemu_target(board, arm_result, tmp_path, initrd=hello_initramfs,
                     ready=HELLO_READY) as target:
        lines = target.report.lines()
        names = [t.filename for t in target.report.transfers]
        assert names == ["zImage", "hello.cpio"]
        assert all(t.ok for t in target.report.transfers)
    log = (tmp_path / "console.log").read_text()
    assert "Bytes transferred = " in log
    assert re.search(r"embedbuild-test-init: running on armv7l 6\.1\.", log)
    assert any("power on to ready" in line for line in lines)


@contextlib.contextmanager
def _at_prompt(result: Path, extra: list[Path], workdir: Path):
    """QEMU at its U-Boot prompt, with a TFTP server holding the result and extra files."""
    board = load_board("qemu-arm-virt")
    served = stage_files(result, workdir / "tftp", extra)
    with BenchNetwork() as net, TftpServer(served, net.server_ip, 69, netns=net.path):
        qemu = QemuBoard(board.qemu, net, workdir)
        try:
            with Console(qemu.power_on(), log=workdir / "console.log") as console:
                uboot = UBootDriver(console, board.uboot.prompt)
                uboot.interrupt()
                yield board, uboot, net
        finally:
            qemu.power_off()


def test_missing_file_is_reported(arm_result: Path, tmp_path: Path):
    with _at_prompt(arm_result, [], tmp_path) as (board, uboot, net), \
            pytest.raises(BootError) as e:
        tftp_boot(board, uboot, net.server_ip, net.device_ip, net.netmask,
                  tftp_boot_commands(board, "zImage", "missing.cpio"), HELLO_READY, BootReport(),
                  timeout=30)
    assert "TFTP error: 'File not found' (1)" in str(e.value)
    assert "missing.cpio" in str(e.value)


def test_corrupted_ramdisk_is_reported(arm_result: Path, hello_initramfs: Path, tmp_path: Path):
    rd = tmp_path / "rd.uImage"
    subprocess.run(["mkimage", "-A", "arm", "-O", "linux", "-T", "ramdisk", "-C", "none",
                    "-n", "test", "-d", hello_initramfs, rd], check=True, capture_output=True)
    data = bytearray(rd.read_bytes())
    data[64 + 1000] ^= 0xFF  # one bit pattern in the payload: the data CRC must catch it
    rd.write_bytes(data)
    with _at_prompt(arm_result, [rd], tmp_path) as (_board, uboot, _net):
        uboot.check("setenv ipaddr 10.77.0.2; setenv serverip 10.77.0.1")
        uboot.check("tftpboot 0x40400000 zImage")
        uboot.check("tftpboot 0x44000000 rd.uImage")
        with pytest.raises(BootError) as e:
            uboot.boot("bootz 0x40400000 0x44000000 0x40000000")
    assert "Bad Data CRC" in str(e.value)


def test_kernel_panic_is_detected_at_once(arm_result: Path, tmp_path: Path):
    no_init = build_hello_initramfs(tmp_path, with_init=False)
    board = load_board("qemu-arm-virt")
    t0 = time.monotonic()
    with pytest.raises(BootError) as e, qemu_target(board, arm_result, tmp_path / "w",
                                                    initrd=no_init, ready=HELLO_READY,
                                                    timeout=120):
        pass
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
