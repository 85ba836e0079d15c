"""Every other reader of input from outside, for the classes the binary cache had:
unbounded reads (a device or FIFO where a file belongs), parsing outside the error
path (a URL that does not parse, nesting that recursion cannot take), numbers that are
not what they look like. Each: one error line (or a normal answer), no traceback, and a
watchdog bounding the run's time and memory (but the serial URLs that only parse, which
run in this process: the same code without another interpreter's start-up)."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import pytest
from conftest import run_main
from hostile import run_watched

from embedbuild.rig.tftp import Limits, TftpServer

BAD_URLS = {
    "rfc2217://[::1:3000": "no HOST:PORT in the URL (Invalid IPv6 URL)",
    "socket://[fe80::1%eth0:3000": "no HOST:PORT in the URL (Invalid IPv6 URL)",
    "rfc2217://rig1.lab:99999": "no HOST:PORT in the URL (Port out of range 0-65535)",
    "rfc2217://rig1.lab:0": "no HOST:PORT in the URL",
    "rfc2217://rig1.lab:3001/tty#x": "only HOST:PORT (and ?options) are taken",
}


def _one_error(r, needle: str) -> None:
    assert "Traceback" not in r.err, r.err
    assert r.code == 1, r.out + r.err
    assert r.err.count("error:") == 1 and needle in r.own_err.splitlines()[0], r.err


@pytest.mark.parametrize("url", BAD_URLS)
def test_serial_url_that_does_not_parse_is_one_line(tmp_path: Path, url: str):
    _one_error(run_main("console", "--serial", url, store=tmp_path / "s"),
               f"--serial {url}: {BAD_URLS[url]}")


def test_boot_refuses_a_bad_serial_url_before_building(tmp_path: Path):
    url = "rfc2217://[::1:3000"
    r, killed = run_watched("boot", "qemu-arm-virt", "--server-ip", "127.0.0.1", "--device-ip",
                            "127.0.0.2", "--serial", url, store=tmp_path / "s", seconds=30)
    assert killed is None, killed
    _one_error(r, f"--serial {url}: no HOST:PORT in the URL (Invalid IPv6 URL)")
    assert not (tmp_path / "s").exists()  # refused before anything was built


def test_doctor_reports_a_bad_serial_url(tmp_path: Path):
    url = "rfc2217://[::1:3000"
    r, killed = run_watched("doctor", "--serial", url, store=tmp_path / "s", seconds=60)
    assert killed is None and "Traceback" not in r.err, r.err
    assert f"FIX serial {url}: --serial {url}: no HOST:PORT in the URL" in r.out


def test_a_system_file_that_is_a_device_or_fifo_is_not_read(tmp_path: Path):
    fifo = tmp_path / "system.toml"
    os.mkfifo(fifo)
    for path, what in (("/dev/zero", "a character device"), (str(fifo), "a FIFO")):
        r, killed = run_watched("build", "qemu-arm-virt", "--system", path,
                                store=tmp_path / "s", seconds=30, max_memory=2 << 30)
        assert killed is None, killed
        _one_error(r, f"{path}: cannot read: {what}, not a regular file")


def test_a_key_file_that_is_a_device_is_not_read(tmp_path: Path):
    env = {"EMBEDBUILD_SUBSTITUTERS": str(tmp_path / "cache"),
           "EMBEDBUILD_TRUSTED_KEYS": "/dev/zero", "XDG_CONFIG_HOME": str(tmp_path)}
    r, killed = run_watched("build", "qemu-arm-virt", "--step", "segment0", store=tmp_path / "s",
                            env=env, seconds=30, max_memory=2 << 30)
    assert killed is None, killed
    _one_error(r, "/dev/zero: cannot read this public key: a character device")


def test_a_flash_image_that_is_a_device_is_not_read(tmp_path: Path):
    r, killed = run_watched("flash", "qemu-arm-virt", "--partition", "firmware-a", "--dry-run",
                            "--image", "/dev/zero", store=tmp_path / "s", seconds=30,
                            max_memory=2 << 30)
    assert killed is None, killed
    _one_error(r, "/dev/zero: cannot read image: a character device, not a regular file")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_tftp_options_that_only_look_like_numbers(tmp_path: Path):
    """Digits int() refuses (5000 of them: over Python's limit) were a traceback in the
    log, a 'server error' and a leaked file and socket per request: now the option is
    ignored as out of range and the file is served. Non-ASCII digits are malformed."""
    (tmp_path / "f").write_bytes(b"x" * 1000)
    # Room for every request's session at once; each ends a second after its client left.
    limits = Limits(sessions=64, per_client=64, idle=1.0)
    with TftpServer(tmp_path, "127.0.0.1", 0, limits=limits) as server:
        before = _fds()
        # Every client keeps its port to the end: a port closed and handed out again
        # would get the ERROR 'timed out' of an earlier request's session.
        clients = []
        for value in ("9" * 5000, "0" * 4400 + "512", "²", "٣"):
            for _ in range(10):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                clients.append(s)
                s.settimeout(3)
                opts = f"blksize\0{value}\0windowsize\0{value}\0".encode()
                s.sendto(struct.pack("!H", 1) + b"f\0octet\0" + opts, ("127.0.0.1", server.port))
                reply, _ = s.recvfrom(70000)
                if value.isascii():  # DATA block 1: served as if the option were absent
                    assert reply[:4] == struct.pack("!HH", 3, 1), reply
                else:  # ERROR 4 (illegal operation), never 0 (a server error)
                    assert reply[:4] == struct.pack("!HH", 5, 4), reply
        for s in clients:
            s.close()
        deadline = time.monotonic() + 15
        while server.sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.sessions
        assert _fds() <= before + 2  # every session's file and socket closed with it
