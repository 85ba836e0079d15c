"""Checks against a booted board, over its serial console: the same tests for a QEMU
board in CI and for a real board on a USB serial adapter (`embedbuild test BOARD
--serial DEV ...`). The `target` fixture comes from embedbuild's pytest plugin."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from embedbuild.cpio import read_newc
from embedbuild.manifest import Manifest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the QEMU bench network needs root")]

UNAME_M = {"arm": "armv7l", "arm64": "aarch64", "mips": "mips"}
KEY = Path(__file__).resolve().parent.parent / "data" / "bench_key"
# How to undo each initramfs compression (embedbuild/compress.py), to read the image.
UNPACK = {"none": None, "gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"],
          "lzma": ["xz", "--format=lzma", "-dc"], "lzo": ["lzop", "-dc"], "lz4": ["lz4", "-dc"],
          "zstd": ["zstd", "-dc"]}


def test_machine(target):
    assert target.succeed("uname -m").strip() == UNAME_M[target.target.board.arch.value]


def test_cmdline_holds_the_boards_bootargs(target):
    cmdline = target.succeed("cat /proc/cmdline").strip()
    assert target.target.board.kernel.cmdline in cmdline


def test_declared_services_run(target):
    for s in target.target.board.system.services:
        pid = target.succeed(f"cat /run/svc/{s.name}.pid").strip()
        status, _ = target.run(f"kill -0 {pid}")
        assert status == 0, f"service {s.name} (pid {pid}) is not running"
        comm = target.succeed(f"cat /proc/{pid}/cmdline | tr '\\0' ' '")
        assert comm.split()[0].split("/")[-1] == s.command.split()[0].split("/")[-1]


def test_the_kernel_gets_no_empty_virtio_transports(target):
    """A board whose U-Boot drops QEMU's unused virtio-mmio transports from the device
    tree (qemu-arm-virt: u-boot-virtio-mmio-trim.patch) passes that tree on: the kernel
    has a node for each virtio device it found, and no more."""
    build = target.target.board.uboot.build
    if build is None or not any(p.name == "u-boot-virtio-mmio-trim.patch"
                                for p in build.patches):
        pytest.skip("the board's U-Boot passes QEMU's device tree as it is")
    nodes = target.succeed("set -- /proc/device-tree/virtio_mmio@*; echo $#").strip()
    devices = target.succeed("set -- /sys/bus/virtio/devices/*; echo $#").strip()
    assert int(devices) >= 1 and nodes == devices


def test_network_address_is_the_configured_one(target):
    net = target.target.board.system.network
    out = target.succeed(f"ip -4 addr show {net.interface}")
    assert f"inet {net.address} " in out


def test_file_fetched_back_over_tftp_matches_manifest(target):
    manifest = Manifest.read(target.result)
    name = manifest.kernel.file
    target.succeed(f"tftp -g -r {name} -l /tmp/fetched {target.target.link.server_ip}")
    got = target.succeed("sha256sum /tmp/fetched").split()[0]
    assert got == manifest.files[name].sha256
    target.succeed("rm /tmp/fetched")


def test_status_and_exact_output(target):
    assert target.run("printf 'a b\\n\\tc'; exit 7") == (7, "a b\n\tc")
    assert target.run("true") == (0, "")


def test_kernel_messages_amid_output(target):
    # Kernel log lines at high priority go to the console while seq writes.
    status, out = target.run(
        "(i=0; while [ $i -lt 40 ]; do echo '<2>embedbuild-noise line' > /dev/kmsg; "
        "i=$((i+1)); done) & seq 1 2000; wait")
    assert status == 0
    assert out == "".join(f"{i}\n" for i in range(1, 2001))
    assert "embedbuild-noise line" in target.target.console.text


def test_slow_paced_line(target):
    console = target.target.console
    chunk, delay = console.chunk, console.delay
    console.chunk, console.delay = 7, 0.01
    try:
        text = "x" * 300
        assert target.succeed(f"echo {text} | wc -c").strip() == "301"
    finally:
        console.chunk, console.delay = chunk, delay


def test_respawning_service_restarts(target):
    svc = next((s for s in target.target.board.system.services
                if s.respawn and s.name != "dropbear"), None)
    if svc is None:
        pytest.skip("the system declares no respawning service")
    old = target.succeed(f"cat /run/svc/{svc.name}.pid").strip()
    mark = target.mark()
    target.succeed(f"kill {old}")
    target.wait_for(rf"service {svc.name} exited with status \d+, restarting", 30, since=mark)
    # init waits before it restarts a service (back-off): wait on a deadline, however fast
    # or slow the machine is, not for a number of looks.
    deadline = time.monotonic() + 30
    while True:
        status, new = target.run(f"cat /run/svc/{svc.name}.pid")
        # init's shell writes the file as truncate, then write: an empty read is a pid
        # file being written, not a new pid (seen under load).
        if status == 0 and new.strip() not in ("", old):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{svc.name} was not restarted within 30 s")
        time.sleep(0.1)
    assert target.run(f"kill -0 {new.strip()}")[0] == 0


def _ssh(target, tmp_path: Path, key: Path | None, *opts: str) -> subprocess.CompletedProcess:
    argv = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *opts]
    if key is not None:
        k = tmp_path / f"id-{key.name}"
        shutil.copyfile(key, k)
        k.chmod(0o600)  # ssh refuses a private key others can read
        argv += ["-o", "IdentitiesOnly=yes", "-i", str(k)]
    argv += [f"root@{target.target.link.device_ip}", "uname -m"]
    if target.target.network is not None:
        argv = target.target.network.exec_argv(argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_ssh_with_the_listed_key(target, tmp_path: Path):
    if "dropbear" not in target.target.board.system.packages:
        pytest.skip("no SSH server in this system")
    r = _ssh(target, tmp_path, KEY)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == UNAME_M[target.target.board.arch.value]


def test_ssh_with_another_key_is_refused(target, tmp_path: Path):
    if "dropbear" not in target.target.board.system.packages:
        pytest.skip("no SSH server in this system")
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    r = _ssh(target, tmp_path, other)
    assert r.returncode == 255 and "Permission denied" in r.stderr


def test_ssh_password_login_is_not_offered(target, tmp_path: Path):
    if "dropbear" not in target.target.board.system.packages:
        pytest.skip("no SSH server in this system")
    r = _ssh(target, tmp_path, None, "-v", "-o", "PubkeyAuthentication=no",
             "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert r.returncode == 255
    offered = re.findall(r"Authentications that can continue: (\S+)", r.stderr)
    assert offered and all(m == "publickey" for m in offered), offered


def test_scp_and_the_other_dropbear_programs_run_from_one_binary(target, tmp_path: Path):
    """dropbear is one multi-call binary: scp (a host's scp runs the device's), dbclient
    and dropbearkey are links to it, picked by the name they are called by."""
    if "dropbear" not in target.target.board.system.packages:
        pytest.skip("no SSH server in this system")
    for prog in ("dbclient", "dropbearkey", "scp"):
        assert target.succeed(f"readlink /usr/bin/{prog}").strip() == "../sbin/dropbear"
    assert "Public key portion is:" in target.succeed(
        "dropbearkey -t ed25519 -f /tmp/eb-key 2>&1; rm -f /tmp/eb-key")
    assert "Dropbear SSH client" in target.succeed("dbclient -h 2>&1 || true")
    data = tmp_path / "payload"
    data.write_bytes(os.urandom(50_000))
    k = tmp_path / "id"
    shutil.copyfile(KEY, k)
    k.chmod(0o600)
    # -O: the scp protocol (OpenSSH 9 defaults to SFTP, which dropbear does not serve).
    argv = ["scp", "-O", "-q", "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-i", str(k), str(data), f"root@{target.target.link.device_ip}:/tmp/payload"]
    if target.target.network is not None:
        argv = target.target.network.exec_argv(argv)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = target.succeed("sha256sum /tmp/payload").split()[0]
    assert got == hashlib.sha256(data.read_bytes()).hexdigest()


def test_big_endian_or_little_as_the_board(target):
    # The running system says which byte order it has: od prints 0x0102 read from bytes 02 01.
    word = target.succeed("printf '\\001\\002' | od -An -tx2").strip()
    big = target.target.board.cross_compile.startswith("mips-")
    assert word == ("0102" if big else "0201")


def test_host_keys_made_on_the_device_not_in_the_image(target):
    if "dropbear" not in target.target.board.system.packages:
        pytest.skip("no SSH server in this system")
    keys = target.succeed("ls /etc/dropbear").split()
    assert any(k.startswith("dropbear_") for k in keys), "dropbear made no host key"
    manifest = Manifest.read(target.result)
    image = (target.result / manifest.with_role("initramfs")[0]).read_bytes()
    unpack = UNPACK[target.target.board.system.compression]
    raw = subprocess.run(unpack, input=image, capture_output=True, check=True).stdout \
        if unpack else image
    names = [e.path for e in read_newc(raw)]
    assert "usr/sbin/dropbear" in names
    assert not [n for n in names if n.startswith("etc/dropbear/")]
