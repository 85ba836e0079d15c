"""A shared lab through labgrid (embedbuild[labgrid], labgrid 26.0.1): a labgrid-coordinator
and a labgrid-exporter on loopback, started by the tests with their own configuration.

Fast: `labgrid env` is read back by labgrid itself; without labgrid, `--place` and
`labgrid env` say in one line how to get it; places are taken in turn through the
coordinator's reservations (a second holder waits, then gets the place once the first
releases), and a missing place or coordinator is one line.

Slow: the exporter exports a NetworkSerialPort, a ser2net on loopback serving the QEMU
twin's console (the remote-rig path, tests/test_remote_rig.py); `embedbuild boot
qemu-arm-virt --qemu --place twin` boots it to the ready line over that port, a second
`boot --place twin` waits for the place and boots once the first released it, and one
stopped with SIGTERM releases the place too. CI cost: no build (the session's
qemu-arm-virt); the lab's start (4 s), three CLI runs, two boots of about 5 s: measured
41 s at load average 6 (the lab and both slow tests).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EMBEDBUILD, cli, free_port, run_main

from embedbuild.errors import EmbedbuildError
from embedbuild.load import load_board
from embedbuild.rig.resource import LabgridPlace

labgrid = pytest.importorskip("labgrid", reason="labgrid is an optional extra")
BIN = Path(sys.executable).parent


@dataclass
class Lab:
    """A coordinator and an exporter on loopback."""

    coordinator: str
    folder: Path
    procs: list[subprocess.Popen]

    def client(self, *args: str, env: dict | None = None) -> str:
        p = subprocess.run([str(BIN / "labgrid-client"), "-x", self.coordinator, *args],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, **(env or {})}, cwd=self.folder)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    def place(self, name: str) -> dict:
        """What the coordinator says of a place: acquired by whom, its reservation."""
        out = self.client("-p", name, "show")
        return {"acquired": re.search(r"acquired: (\S+)", out).group(1),
                "reservations": self.client("reservations").strip()}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def lab(folder: Path, serial_port: int) -> Iterator[Lab]:
    """labgrid-coordinator on 127.0.0.1 and an exporter whose group ``qemu-twin`` holds a
    NetworkSerialPort at 127.0.0.1:serial_port; a place ``twin`` matching it."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"127.0.0.1:{port}"
    (folder / "exporter.yaml").write_text(
        f"qemu-twin:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {serial_port}\n"
        "    speed: 115200\n")
    procs = [subprocess.Popen([str(BIN / "labgrid-coordinator"), "--listen", address],
                              cwd=folder, stdout=(folder / "coordinator.log").open("w"),
                              stderr=subprocess.STDOUT)]
    the_lab = Lab(address, folder, procs)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert procs[0].poll() is None and time.monotonic() < deadline, \
                (folder / "coordinator.log").read_text()
            time.sleep(0.05)
        procs.append(subprocess.Popen(
            [str(BIN / "labgrid-exporter"), "-c", address, "-n", "rig1", "--hostname",
             "127.0.0.1", str(folder / "exporter.yaml")], cwd=folder,
            stdout=(folder / "exporter.log").open("w"), stderr=subprocess.STDOUT))
        the_lab.client("-p", "twin", "create")
        the_lab.client("-p", "twin", "add-match", "rig1/qemu-twin/NetworkSerialPort")
        while "rig1/qemu-twin/NetworkSerialPort" not in the_lab.client("resources"):
            assert procs[1].poll() is None and time.monotonic() < deadline, \
                (folder / "exporter.log").read_text()
            time.sleep(0.1)
        yield the_lab
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def twin_lab(tmp_path_factory) -> Iterator[tuple[Lab, Path, object]]:
    """One lab for the module: ser2net on loopback serving the QEMU twin's console link in
    a bench folder of the module's own, the exporter exporting it as a NetworkSerialPort,
    the place ``twin``. Yields (the lab, the bench folder, ser2net)."""
    from test_remote_rig import ser2net

    folder = tmp_path_factory.mktemp("lab")
    bench = folder / "bench"
    with ser2net(bench / "qemu-arm-virt" / "console", folder) as s, \
            lab(folder / "lab", s.port) as the_lab:
        yield the_lab, bench, s


# ---------------------------------------------------------------- fast


def test_the_environment_is_labgrids_own(tmp_path):
    """labgrid reads what `labgrid env` writes: the board through its place, the twin
    through QEMUDriver with the board's machine and firmware."""
    out = tmp_path / "env.yaml"
    r = run_main("labgrid", "env", "qemu-arm-virt", "--place", "rack3-arm", "-o", str(out),
                 store=tmp_path / "s")
    assert r.code == 0, r.err
    env = labgrid.Environment(str(out))
    config = env.config.get_targets()
    assert config["main"]["resources"] == {"RemotePlace": {"name": "rack3-arm"}}
    assert set(config["main"]["drivers"]) == {"SerialDriver", "UBootDriver"}
    twin = env.get_target("qemu")  # labgrid binds the drivers: checks each field
    qemu = twin.get_driver("QEMUDriver", activate=False)
    board = load_board("qemu-arm-virt")
    assert (qemu.machine, qemu.cpu, qemu.memory) == ("virt", "cortex-a15", "256M")
    assert env.config.get_image_path("firmware") == str(board.qemu.firmware)
    assert twin.get_driver("UBootDriver", activate=False).prompt == "=> "
    twin.cleanup()
    r = run_main("labgrid", "env", "ap-ac-lite", store=tmp_path / "s")
    assert r.code == 0 and "name: ap-ac-lite" in r.out and "qemu" not in r.out
    assert "note: ap-ac-lite has no [qemu]: no QEMU twin target" in r.err


@pytest.mark.parametrize("args", [
    ["labgrid", "env", "qemu-arm-virt"],
    ["boot", "ap-ac-lite", "--place", "ap1", "--server-ip", "10.9.0.1", "--device-ip",
     "10.9.0.2"],
    ["console", "--place", "ap1"],
])
def test_without_labgrid_one_line_says_how_to_get_it(tmp_path, monkeypatch, args):
    monkeypatch.setitem(sys.modules, "labgrid", None)  # as if it were not installed
    r = run_main(*args, store=tmp_path / "s")
    assert r.code == 1 and r.err.count("error:") == 1 and "Traceback" not in r.err, r.err
    assert "labgrid is not installed" in r.err
    assert "hint: pip install 'embedbuild[labgrid]' (labgrid 26.0.1)" in r.err
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="--qemu checks for root first")
def test_the_system_tests_hold_the_place_too(tmp_path, monkeypatch):
    """`embedbuild test --place` hands the place to the pytest plugin, which holds it for
    the session as `boot --place` does."""
    seen: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda argv, env=None: seen.append(argv) or 0)
    r = run_main("test", "qemu-arm-virt", "--qemu", "--place", "twin", "--coordinator",
                 "127.0.0.1:1", "--place-timeout", "5", store=tmp_path)
    assert r.code == 0, r.err
    argv = " ".join(seen[0])
    assert "--eb-qemu --eb-place twin --eb-coordinator 127.0.0.1:1 --eb-place-timeout 5.0" \
        in argv


def test_one_console_at_a_time(tmp_path):
    r = run_main("console", "--serial", "/dev/ttyUSB0", "--place", "ap1", store=tmp_path)
    assert r.code == 1 and "one console at a time: --serial or --place" in r.err


def test_a_coordinator_that_is_not_there_is_one_line(tmp_path):
    port = free_port()
    t0 = time.monotonic()
    r = cli("console", "--place", "twin", "--coordinator", f"127.0.0.1:{port}",
            store=tmp_path / "s")
    assert r.code == 1 and "Traceback" not in r.err and r.err.count("error:") == 1, r.err
    assert f"cannot reach the labgrid coordinator at 127.0.0.1:{port}" in r.err
    assert time.monotonic() - t0 < 30


HOLDER = """
import sys
from embedbuild.rig.lab import PlaceDriver
from embedbuild.rig.resource import LabgridPlace
place = LabgridPlace(name="twin", coordinator=sys.argv[1], timeout=60)
with PlaceDriver(place, lambda text: print("WAIT", text, flush=True)) as held:
    print("HELD", held.url, flush=True)
    sys.stdin.readline()  # until the test says so
"""


def _holder(coordinator: str) -> subprocess.Popen:
    """A process of its own holding the place (one place per process: see rig/lab.py)."""
    return subprocess.Popen([sys.executable, "-c", HOLDER, coordinator], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _line(p: subprocess.Popen, timeout: float = 30) -> str:
    """The holder's next line, within ``timeout`` seconds."""
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(p.stdout.readline()))
    t.start()
    t.join(timeout)
    assert got and got[0], f"no line from the holder within {timeout} s"
    return got[0].strip()


@pytest.mark.slow  # it starts a lab: about 15 s, shared with the boot below
def test_places_are_taken_in_turn(twin_lab):
    """The second holder waits in the coordinator's queue and gets the place as soon as
    the first releases it; a missing place, and one not free in time, are one line."""
    from embedbuild.rig.lab import PlaceDriver

    the_lab, _, _ = twin_lab
    place = LabgridPlace(name="twin", coordinator=the_lab.coordinator, timeout=1.0)
    with pytest.raises(EmbedbuildError, match=r"no labgrid place 'tw1n' at .* \(places: "
                       r"twin\)"), PlaceDriver(place.model_copy(update={"name": "tw1n"})):
        pass
    first = _holder(the_lab.coordinator)
    second = None
    try:
        assert _line(first).startswith("HELD rfc2217://127.0.0.1:")
        assert the_lab.place("twin")["acquired"] != "None"
        with pytest.raises(EmbedbuildError, match="was not free within 1 s"), \
                PlaceDriver(place):
            pass
        second = _holder(the_lab.coordinator)
        assert re.match(r"WAIT place twin is held by \S+; waiting", _line(second))
        released = time.monotonic()
        first.stdin.close()  # the first lets go
        assert _line(second).startswith("HELD ")
        # At once, not when a reservation expired (a minute).
        assert time.monotonic() - released < 10
        second.stdin.close()
        assert first.wait(30) == 0 and second.wait(30) == 0
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    state = the_lab.place("twin")
    assert state["acquired"] == "None" and "Reservation" not in state["reservations"]


# ---------------------------------------------------------------- slow: the QEMU twin


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_boot_through_a_labgrid_place_and_take_turns(session_store, arm_result, twin_lab):
    the_lab, bench, s = twin_lab
    env = {"EMBEDBUILD_BENCH": str(bench)}
    t0 = time.monotonic()
    argv = [EMBEDBUILD, "boot", "qemu-arm-virt", "--qemu", "--place", "twin",
            "--coordinator", the_lab.coordinator, "--no-console"]
    full = {**os.environ, "EMBEDBUILD_STORE": str(session_store), "COLUMNS": "200", **env}
    first = subprocess.Popen(argv, env={**full, "LG_USERNAME": "alice"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while the_lab.place("twin")["acquired"] == "None":
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
        time.sleep(0.2)
    second = subprocess.Popen(argv, env={**full, "LG_USERNAME": "bob"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out1, _ = first.communicate(timeout=300)
    ended = time.monotonic()
    out2, _ = second.communicate(timeout=300)
    assert first.returncode == 0, out1
    assert second.returncode == 0, out2
    for out in (out1, out2):
        assert "acquired labgrid place twin" in out and "power on to ready" in out
    assert re.search(r"place twin is held by \S+/alice; waiting for it", out2), out2
    trace = s.trace.read_text(errors="replace")
    assert trace.count("embedbuild: system ready") == 2  # both boots over the lab's port
    # SIGTERM while holding the place: released all the same.
    third = subprocess.Popen(argv, env={**full, "LG_USERNAME": "carol"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while the_lab.place("twin")["acquired"] == "None":
        assert third.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    third.send_signal(signal.SIGTERM)
    out3, _ = third.communicate(timeout=60)
    assert third.returncode == 130, out3
    state = the_lab.place("twin")
    assert state["acquired"] == "None" and "Reservation" not in state["reservations"]
    print(f"second boot ended {time.monotonic() - ended:.1f} s after the first; all "
          f"{time.monotonic() - t0:.1f} s")
