"""Real devices: everything is checked before anyone is asked to power a board on.

No hardware: a pty pair stands for the board's serial line, a network namespace with
a dummy interface for the bench LAN. Each failure: one line naming the cause and the
fix, exit 1, no power-on prompt, nothing left listening.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EMBEDBUILD, HELLO_READY

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

SERVER, DEVICE = "10.88.0.1", "10.88.0.2"


@pytest.fixture
def lan() -> Iterator[str]:
    """A namespace whose dummy0 (one end of a veth pair) holds SERVER/24, up."""
    ns = f"ebtest-preflight-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "set", "lo", "up"],
                    ["link", "add", "dummy0", "type", "veth", "peer", "name", "board0"],
                    ["addr", "add", f"{SERVER}/24", "dev", "dummy0"],
                    ["link", "set", "board0", "up"], ["link", "set", "dummy0", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _boot(ns: str, store: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMBEDBUILD_STORE": str(store), "COLUMNS": "200"}
    return subprocess.run(["ip", "netns", "exec", ns, EMBEDBUILD, "boot", "qemu-arm-virt",
                           *args], env=env, capture_output=True, text=True, timeout=timeout)


def _udp_sockets_on_69(ns: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/udp"],
                         capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines()[1:] if line.split()[1].endswith(":0045"))


def _refused(r: subprocess.CompletedProcess, ns: str, *needles: str) -> None:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "power on" not in r.stderr + r.stdout
    for n in needles:
        assert n in r.stderr, f"{n!r} not in:\n{r.stderr}"
    assert _udp_sockets_on_69(ns) == ""


def test_server_address_not_on_this_machine(lan, board_line, tmp_path):
    _, tty = board_line
    r = _boot(lan, tmp_path / "s", "--serial", tty, "--server-ip", "10.88.0.9",
              "--device-ip", DEVICE)
    _refused(r, lan, "10.88.0.9 (--server-ip) is not an address of this machine",
             "dummy0 (10.88.0.1/24)", "ip addr add 10.88.0.9/24 dev dummy0")


def test_interface_down(lan, board_line, tmp_path):
    subprocess.run(["ip", "-n", lan, "link", "set", "dummy0", "down"], check=True)
    _, tty = board_line
    r = _boot(lan, tmp_path / "s", "--serial", tty, "--server-ip", SERVER, "--device-ip", DEVICE)
    _refused(r, lan, "dummy0, which is down", "ip link set dummy0 up")


@pytest.mark.parametrize("device, needle", [
    ("10.99.0.2", "not in dummy0's subnet 10.88.0.0/24"),
    (SERVER, "is this machine's own address"),
    ("10.88.0.300", "is not an IPv4 address"),
])
def test_device_address(lan, board_line, tmp_path, device, needle):
    _, tty = board_line
    r = _boot(lan, tmp_path / "s", "--serial", tty, "--server-ip", SERVER, "--device-ip", device)
    _refused(r, lan, needle)


def test_port_69_held_by_another_server(lan, board_line, tmp_path):
    holder = subprocess.Popen(
        ["ip", "netns", "exec", lan, sys.executable, "-c",
         f"import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         f"s.bind(('{SERVER}', 69)); print('bound', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        _, tty = board_line
        r = _boot(lan, tmp_path / "s", "--serial", tty, "--server-ip", SERVER,
                  "--device-ip", DEVICE)
        assert r.returncode == 1 and "power on" not in r.stderr
        assert f"port 69/udp on {SERVER} is in use (held by {holder.pid} python" in r.stderr, \
            r.stderr
    finally:
        holder.kill()
        holder.wait()


def test_missing_serial_device(lan, tmp_path):
    r = _boot(lan, tmp_path / "s", "--serial", "/dev/ttyUSB97", "--server-ip", SERVER,
              "--device-ip", DEVICE)
    _refused(r, lan, "serial device /dev/ttyUSB97 does not exist", "plug the USB serial adapter")


def test_serial_device_held_by_another_program(lan, board_line, tmp_path):
    _, tty = board_line
    fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a terminal program holding the line would
    try:
        r = _boot(lan, tmp_path / "s", "--serial", tty, "--server-ip", SERVER,
                  "--device-ip", DEVICE)
        _refused(r, lan, f"serial device {tty} is in use by {os.getpid()} ")
    finally:
        os.close(fd)


def test_missing_initrd_file(lan, board_line, tmp_path):
    _, tty = board_line
    r = _boot(lan, tmp_path / "s", "--serial", tty, "--server-ip", SERVER, "--device-ip", DEVICE,
              "--initrd", str(tmp_path / "nope.cpio"))
    _refused(r, lan, "file to serve not found", "nope.cpio")


def test_doctor_lists_each_check(lan, board_line, tmp_path):
    _, tty = board_line
    env = {**os.environ, "EMBEDBUILD_STORE": str(tmp_path / "s")}
    r = subprocess.run(["ip", "netns", "exec", lan, EMBEDBUILD, "doctor", "qemu-arm-virt",
                        "--serial", tty, "--server-ip", SERVER, "--device-ip", DEVICE],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("privileges", "store", "mkimage", "arm-linux-gnueabihf-gcc", "qemu-system-arm",
                  f"serial {tty}", f"network {SERVER} -> {DEVICE}", f"TFTP port {SERVER}:69"):
        assert f"ok  {check}" in r.stdout, r.stdout
    r = subprocess.run(["ip", "netns", "exec", lan, EMBEDBUILD, "doctor", "--serial", tty,
                        "--server-ip", "10.88.0.9", "--device-ip", DEVICE],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "FIX network 10.88.0.9" in r.stdout
    assert "ip addr add 10.88.0.9/24 dev dummy0" in r.stdout


@pytest.mark.slow
def test_garbage_at_the_wrong_baud_is_named(lan, board_line, session_store, arm_result,
                                            tmp_path):
    """The board is 'powered on' but talks at another speed: the message says so."""
    import threading

    master, tty = board_line
    stop = threading.Event()

    def noise() -> None:
        while not stop.is_set():
            os.write(master, bytes(range(128, 256)) + b"\x00\x1b\x7f")
            stop.wait(0.05)

    t = threading.Thread(target=noise, daemon=True)
    t.start()
    try:
        r = _boot(lan, session_store, "--serial", tty, "--server-ip", SERVER, "--device-ip",
                  DEVICE, "--power-timeout", "3", "--no-console", "--ready", HELLO_READY)
    finally:
        stop.set()
        t.join()
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no U-Boot on" in r.stderr and "after 3 s" in r.stderr
    assert "the line speed is probably wrong" in r.stderr
    assert "board declares 115200 baud" in r.stderr and "57600" in r.stderr
    assert _udp_sockets_on_69(lan) == ""
