"""Consoles on remote rigs: `--serial rfc2217://HOST:PORT` through Debian's ser2net on
loopback, started by each test with its own configuration.

Fast tests: a pty pair stands for the board's UART behind ser2net; refusals (a closed
port, a server that never answers, one that hangs up) are one line before anything is
powered. The slow test boots qemu-arm-virt with its console reached only through
ser2net and runs the rig tests against it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EMBEDBUILD, cli, free_port, run_main

from embedbuild.load import load_board
from embedbuild.rig.bench import Bench
from embedbuild.rig.console import Console
from embedbuild.rig.preflight import URL_TIMEOUT, PreflightError
from embedbuild.rig.resource import ManualPower, SerialLine
from embedbuild.rig.target import Target

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@dataclass
class Ser2net:
    """A running ser2net serving one device as RFC 2217 on 127.0.0.1:port."""

    popen: subprocess.Popen
    port: int
    trace: Path

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.port}"


@contextlib.contextmanager
def ser2net(device: Path | str, tmp_path: Path) -> Iterator[Ser2net]:
    """ser2net (the Debian package; its system service stays off) with a configuration
    of its own: a rig host's line for one board, plus a trace of what the device said."""
    port = free_port()
    trace = tmp_path / "ser2net-trace.log"
    config = tmp_path / "ser2net.yaml"
    config.write_text(
        "%YAML 1.1\n---\n"
        "connection: &board\n"
        f"  accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n"
        f"  connector: serialdev,{device},115200n81,local\n"
        "  options:\n"
        f"    trace-read: {trace}\n")
    p = subprocess.Popen(["ser2net", "-n", "-c", str(config), "-P", str(tmp_path / "pid")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert p.poll() is None and time.monotonic() < deadline, "ser2net did not start"
            time.sleep(0.05)
        yield Ser2net(p, port, trace)
    finally:
        p.terminate()
        p.wait(10)


def _holds(pid: int, device: str) -> bool:
    """Whether process pid has device open."""
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) == device for fd in fds.iterdir())
    return False


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on the port (from /proc: connecting would make
    ser2net open its device)."""
    want = f":{port:04X} "
    with open("/proc/net/tcp") as f:
        return any(want in line and line.split()[3] == "0A" for line in f)


def _one_line_refusal(r, needle: str) -> None:
    assert r.code == 1, r.out + r.err
    assert "Traceback" not in r.err
    assert r.err.count("error:") == 1, r.err
    assert needle in r.own_err.splitlines()[0], r.err


# ---------------------------------------------------------------- refusals


def test_closed_port_is_one_line(tmp_path):
    port = free_port()  # nothing listens there
    r = cli("console", "--serial", f"rfc2217://127.0.0.1:{port}", store=tmp_path / "s")
    _one_line_refusal(r, f"cannot reach serial server 127.0.0.1:{port}: Connection refused")
    assert "ser2net" in r.err  # the hint says what to start
    r = run_main("doctor", "--serial", f"socket://127.0.0.1:{port}", store=tmp_path / "s")
    assert r.code == 1 and "Traceback" not in r.err
    assert f"FIX serial socket://127.0.0.1:{port}: cannot reach serial server" in r.out


@pytest.mark.parametrize("url, needle", [
    ("rfc2217://rig1.lab", "no HOST:PORT in the URL"),
    ("rfc2217://rig1.lab:http", "no HOST:PORT in the URL"),
    ("telnet://rig1.lab:3001", "unknown URL scheme 'telnet'"),
])
def test_malformed_url_is_one_line(tmp_path, url, needle):
    _one_line_refusal(run_main("console", "--serial", url, store=tmp_path / "s"), needle)


def test_server_that_cannot_open_its_device_is_named(tmp_path):
    with ser2net(tmp_path / "no-such-tty", tmp_path) as s:
        r = run_main("console", "--serial", s.url, store=tmp_path / "s")
    _one_line_refusal(r, f"serial server 127.0.0.1:{s.port} hung up at once: Device open "
                      "failure")


def test_board_console_checks_the_server_keeps_the_line(tmp_path):
    """Also when the console opens (after preflight, e.g. once QEMU linked its pty): a
    server configured with the wrong device is one line, not a failed negotiation."""
    board = load_board("qemu-arm-virt")
    with ser2net(tmp_path / "wrong-link", tmp_path) as s:
        bench = Bench(SerialLine(port=s.url), None, ManualPower())
        with Target(board, bench, tmp_path) as target, \
                pytest.raises(PreflightError, match="hung up at once: Device open failure"):
            target.open_console()


def test_port_held_by_another_client_is_named(tmp_path, board_line):
    _, tty = board_line
    with ser2net(tty, tmp_path) as s, socket.create_connection(("127.0.0.1", s.port)):
        # Once ser2net holds the device open, the line is the first client's.
        deadline = time.monotonic() + 10
        while not _holds(s.popen.pid, tty):
            assert time.monotonic() < deadline, "ser2net did not open the line"
            time.sleep(0.05)
        r = run_main("console", "--serial", s.url, store=tmp_path / "s")
    _one_line_refusal(r, "hung up at once: Port already in use")


@needs_root
def test_server_that_never_answers_times_out(tmp_path):
    """A rig host that drops the connection attempt: a bounded wait, then one line."""
    ns = f"ebtest-rig-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # The rig's address resolves to a MAC no one has: every SYN is lost on the wire.
        for cmd in (["link", "add", "rig0", "type", "veth", "peer", "name", "rig1"],
                    ["addr", "add", "10.89.0.1/24", "dev", "rig0"],
                    ["link", "set", "rig1", "up"], ["link", "set", "rig0", "up"],
                    ["neigh", "add", "10.89.0.2", "lladdr", "02:00:00:00:00:02", "dev",
                     "rig0", "nud", "permanent"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        t0 = time.monotonic()
        p = subprocess.run(["ip", "netns", "exec", ns, EMBEDBUILD, "console", "--serial",
                            "rfc2217://10.89.0.2:3001"], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "COLUMNS": "200"})
        seconds = time.monotonic() - t0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "serial server 10.89.0.2:3001 did not answer within 3 s" in p.stderr
    # Not the subprocess's 60 s: the timeout, plus a busy machine's start-up.
    assert URL_TIMEOUT <= seconds < URL_TIMEOUT + 40


@needs_root
def test_qemu_takes_only_a_url(tmp_path, board_line):
    _, tty = board_line
    r = cli("boot", "qemu-arm-virt", "--qemu", "--serial", tty, "--no-console",
            store=tmp_path / "s")
    _one_line_refusal(r, f"--qemu takes --serial only as a URL, not {tty}")


# ---------------------------------------------------------------- the console through ser2net


def test_console_through_ser2net_is_paced_and_logged(tmp_path, board_line):
    """The one console layer over RFC 2217: what the board says arrives, what we write
    reaches the board paced in chunks, and both are in the log."""
    master, tty = board_line
    log = tmp_path / "console.log"
    with ser2net(tty, tmp_path) as s, Console(s.url, 115200, log, chunk=4, delay=0.02) as c:
        os.write(master, b"U-Boot 2023.01\r\n=> ")
        c.expect("=> ", timeout=10)
        line = "setenv ipaddr 10.0.0.2"
        t0 = time.monotonic()
        c.write(line + "\n")
        seconds = time.monotonic() - t0
        got = b""
        deadline = time.monotonic() + 10
        while not got.endswith(b"\n") and time.monotonic() < deadline:
            got += os.read(master, 100)
    assert got.replace(b"\r", b"") == (line + "\n").encode()
    # 23 bytes in chunks of 4: five pauses of 20 ms at least between them.
    assert seconds >= 5 * 0.02
    text = log.read_text()
    assert "U-Boot 2023.01" in text and repr(line + "\n") in text
    assert "U-Boot 2023.01" in s.trace.read_text()  # it did go through ser2net


# ---------------------------------------------------------------- a QEMU board on a remote rig


@pytest.mark.slow
@needs_root
def test_qemu_board_through_ser2net_passes_the_rig_tests(session_store, arm_result, tmp_path):
    """qemu-arm-virt's console reached only as rfc2217://127.0.0.1:PORT through ser2net,
    which serves the pty QEMU links in the bench folder: it boots to ready and the rig
    tests (tests/system) pass over it."""
    bench = tmp_path / "bench"
    env = {"EMBEDBUILD_BENCH": str(bench)}
    with ser2net(bench / "qemu-arm-virt" / "console", tmp_path) as s:
        r = cli("test", "qemu-arm-virt", "--qemu", "--serial", s.url, "--", "-q",
                "-p", "no:cacheprovider", store=session_store, env=env, timeout=900)
        trace = s.trace.read_text(errors="replace")
    assert r.code == 0, r.out[-3000:] + r.err[-3000:]
    assert " passed" in r.out and "failed" not in r.out
    # The console went through ser2net: the board's boot and ready line are in its trace.
    assert "Hit any key to stop autoboot" in trace
    assert "embedbuild: system ready" in trace
