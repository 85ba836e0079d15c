"""Userspace builds for real: ELF checks on cross-compiled binaries, segments that
rebuild alone, compression the kernel must unpack, and a failing service on the console."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, cli, manifest, qemu_target

from embedbuild.cpio import Entry
from embedbuild.elf import TOOLCHAIN_ELF
from embedbuild.errors import StepError
from embedbuild.load import load_board
from embedbuild.model.board import Arch
from embedbuild.rig.bootsource import TftpBoot
from embedbuild.rootfs.libraries import check_and_close
from embedbuild.toolchain import Toolchain

pytestmark = pytest.mark.slow
SRC = ROOT / "tests" / "data" / "elf"
ARMHF = "arm-linux-gnueabihf-"


def _cc(prefix: str, out: Path, *args: str) -> bytes:
    subprocess.run([f"{prefix}gcc", "-Os", "-o", out, *args], check=True, capture_output=True)
    return out.read_bytes()


def _check(data: bytes, board_prefix: str, path: str = "usr/bin/hello") -> list[Entry]:
    libdirs = Toolchain(board_prefix, Arch.arm).sysroot_dirs()
    return check_and_close([Entry(path, "file", 0o755, data=data)], TOOLCHAIN_ELF[board_prefix],
                           "overlay 'test'", libdirs, "test-board")


def test_little_endian_arm_binary_in_big_endian_mips_image(tmp_path: Path):
    arm = _cc(ARMHF, tmp_path / "hello", "-static", str(SRC / "hello.c"))
    with pytest.raises(StepError) as e:
        _check(arm, "mips-linux-gnu-")
    msg = str(e.value)
    assert "/usr/bin/hello is ARM 32-bit little-endian hard-float" in msg
    assert "runs MIPS 32-bit big-endian o32" in msg


def test_soft_float_binary_on_hard_float_board(tmp_path: Path):
    soft = _cc("arm-linux-gnueabi-", tmp_path / "hello", "-static", str(SRC / "hello.c"))
    with pytest.raises(StepError) as e:
        _check(soft, ARMHF)
    assert "ARM 32-bit little-endian soft-float" in str(e.value)
    assert "runs ARM 32-bit little-endian hard-float" in str(e.value)
    hard = _cc(ARMHF, tmp_path / "hello-hf", "-static", str(SRC / "hello.c"))
    assert [e.path for e in _check(hard, ARMHF)] == ["usr/bin/hello"]


def test_big_endian_mips_binary_accepted_on_mips_board(tmp_path: Path):
    mips = _cc("mips-linux-gnu-", tmp_path / "hello", "-static", str(SRC / "hello.c"))
    assert len(_check(mips, "mips-linux-gnu-")) == 1


def test_dynamic_binary_gets_its_libraries(tmp_path: Path):
    dyn = _cc(ARMHF, tmp_path / "hello", str(SRC / "hello.c"))
    paths = {e.path for e in _check(dyn, ARMHF)}
    assert {"lib/libc.so.6", "lib/ld-linux-armhf.so.3"} <= paths


def test_dynamic_binary_with_missing_library(tmp_path: Path):
    _cc(ARMHF, tmp_path / "libembedbuildtest.so", "-shared", "-fPIC", str(SRC / "lib.c"))
    exe = _cc(ARMHF, tmp_path / "needs-lib", str(SRC / "needs-lib.c"), f"-L{tmp_path}",
              "-lembedbuildtest")
    with pytest.raises(StepError) as e:
        _check(exe, ARMHF, "usr/bin/needs-lib")
    assert "/usr/bin/needs-lib needs libembedbuildtest.so" in str(e.value)


def test_wrong_binary_in_an_overlay_stops_the_build(boards: Path, tmp_path: Path,
                                                    session_store: Path, arm_result: Path,
                                                    monkeypatch):
    overlays = tmp_path / "overlays"
    (overlays / "tools" / "usr" / "bin").mkdir(parents=True)
    _cc("mips-linux-gnu-", overlays / "tools" / "usr" / "bin" / "tool", "-static",
        str(SRC / "hello.c"))
    toml = boards / "qemu-arm-virt" / "board.toml"
    toml.write_text(toml.read_text().replace('overlays = ["bench"]',
                                             'overlays = ["bench", "tools"]'))
    r = cli("build", str(boards / "qemu-arm-virt"), "--out-link", str(tmp_path / "r"),
            store=session_store, env={"EMBEDBUILD_OVERLAYS": str(overlays)})
    assert r.code == 1 and "Traceback" not in r.err
    assert "overlay 'tools': /usr/bin/tool is MIPS 32-bit big-endian o32" in r.err
    assert "board qemu-arm-virt runs ARM 32-bit little-endian hard-float" in r.err


def test_compression_the_kernel_cannot_unpack(boards: Path, tmp_path: Path,
                                              session_store: Path, arm_result: Path):
    toml = boards / "qemu-arm-virt" / "board.toml"
    text = toml.read_text()
    assert 'compression = "none"' in text
    toml.write_text(text.replace('compression = "none"', 'compression = "xz"'))
    r = cli("build", str(boards / "qemu-arm-virt"), "--out-link", str(tmp_path / "r"),
            store=session_store)
    assert r.code == 1 and "Traceback" not in r.err
    assert "xz-compressed but the kernel cannot unpack it: CONFIG_RD_XZ is n" in r.err
    assert "CONFIG_RD_XZ=y" in r.err


FAILING = """\
hostname = "failing"
[network]
address = "10.77.0.2/24"
[[services]]
name = "steady"
command = "sleep 1000"
[[services]]
name = "broken"
command = "sh -c 'echo broken is starting; exit 3'"
respawn = false
[[services]]
name = "notifies"
command = "sh -c 'sleep 0.3; echo ready >&3; exec sleep 1000'"
ready_fd = 3
depends_on = ["steady"]
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the QEMU bench network needs root")
def test_failing_non_respawn_service_is_reported(tmp_path: Path, session_store: Path,
                                                 arm_result: Path):
    sysfile = tmp_path / "failing.toml"
    sysfile.write_text(FAILING)
    r = cli("build", "qemu-arm-virt", "--system", str(sysfile), "--out-link",
            str(tmp_path / "r"), store=session_store)
    assert r.code == 0, r.err
    board = load_board("qemu-arm-virt", sysfile)
    with qemu_target(board, tmp_path / "w", (tmp_path / "r").resolve()) as t:
        t.boot(TftpBoot(), ready=r"embedbuild: system (ready|up with failed services)\n")
        log = t.console.text
    assert "embedbuild: service broken exited with status 3 (not restarted)" in log
    assert "embedbuild: service broken did not come up: exited with status 3" in log
    assert "embedbuild: system up with failed services" in log
    assert "broken is starting" in log
    # Up once it said so on its descriptor, after what it depends on (the guest's uptime).
    times = {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(
        r"embedbuild: service (\S+) up: started (\d+\.\d+), ready (\d+\.\d+)", log)}
    assert set(times) == {"steady", "notifies"}
    assert times["notifies"][1] - times["notifies"][0] >= 0.3
    assert times["notifies"][0] >= times["steady"][1]
    assert manifest((tmp_path / "r").resolve()).board == "qemu-arm-virt"


def test_a_kernel_symbol_a_package_needs_is_checked_in_the_final_config(
        boards: Path, tmp_path: Path, session_store: Path):
    # Only the kernel's config and the check are made (--step): no kernel compile.
    base = boards / "common" / "kernel-base.config"
    base.write_text(base.read_text().replace("CONFIG_UNIX98_PTYS=y\n", ""))
    r = cli("build", str(boards / "qemu-arm-virt"), "--step", "kernel-needs", "--out-link",
            str(tmp_path / "r"), store=session_store)
    assert r.code == 1 and "Traceback" not in r.err, r.err
    fragment = boards / "qemu-arm-virt" / "kernel.config"
    assert f"error: {fragment}: package dropbear needs CONFIG_UNIX98_PTYS=y, but the kernel " \
        "of qemu-arm-virt has it not set" in r.err
    assert f"add CONFIG_UNIX98_PTYS=y to {fragment}" in r.err
