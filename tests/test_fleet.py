"""A fleet for real: `embedbuild serve` (the command, in a network namespace the test
makes, with dnsmasq for DHCP) and QEMU guests of qemu-arm-virt with their own MACs on
that one bridge, each through Debian's U-Boot: `dhcp`, `pxe get`, `pxe boot`.

Three guests boot at the same time; each reports from its kernel command line its own
device name and the build its configuration named, and the checksum of the /init it
runs, which must be that build's. While they boot, the first one's build is swapped (as
soon as its configuration was read): it still boots the build it was told, whole, and
the next time it boots the new one, whole; the others never see it. A fourth guest with
an unknown MAC gets the default, and after the inventory drops [unknown], nothing.

CI cost: no extra kernel build (the session's qemu-arm-virt; a second system for it is
built by serve: its initramfs segments, result, FIT and SD image, seconds); five boots of
3-5 s from power-on, three of them at once, and one refused `pxe get`. Measured on the
shared 2-core machine: 22 s at load average 6; 30-150 s with three extra busy loops (load
average 12-14), serve's no-op builds (each in a process of its own) and TFTP windows of
four blocks (serve's default, README "A fleet") most of it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import signal
import subprocess
import threading
import time
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from conftest import EMBEDBUILD

from embedbuild.cpio import read_newc
from embedbuild.load import load_board
from embedbuild.model.system import READY_LINE
from embedbuild.rig.bench import Bench
from embedbuild.rig.bootsource import PxeBoot
from embedbuild.rig.netns import BenchNetwork
from embedbuild.rig.resource import LanLink, QemuMachine, QemuPower, SerialLine
from embedbuild.rig.target import Target
from embedbuild.rig.uboot import BootError

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

SERVER = IPv4Interface("10.77.0.1/24")
MACS = {"dev01": "52:54:00:12:34:01", "dev02": "52:54:00:12:34:02",
        "dev03": "52:54:00:12:34:03"}
UNKNOWN_MAC = "52:54:00:12:34:99"
SPARE = '[unknown]\nboard = "qemu-arm-virt"\nsystem = "b.toml"\nappend = "fleet.role=spare"\n\n'


def inventory(path: Path, systems: dict[str, str | None], unknown: bool = True) -> None:
    """The fleet's inventory: devices with their fixed DHCP addresses and systems."""
    text = SPARE if unknown else ""
    for i, (name, system) in enumerate(systems.items(), 1):
        text += (f'[[device]]\nname = "{name}"\nmac = "{MACS[name]}"\n'
                 f'board = "qemu-arm-virt"\nip = "10.77.0.1{i}"\n')
        text += f'system = "{system}"\n\n' if system else "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Serve:
    """`embedbuild serve` running in the namespace; its lines in a file."""

    def __init__(self, net: BenchNetwork, inv: Path, root: Path, store: Path) -> None:
        self.log = root / "serve.log"
        root.mkdir(parents=True, exist_ok=True)
        self.out = self.log.open("w")
        self.proc = subprocess.Popen(
            [*net.exec_argv([EMBEDBUILD, "serve", str(inv), "--listen", str(SERVER.ip),
                             "--root", str(root), "--dhcp-interface", "br0",
                             "--dhcp-range", "10.77.0.100,10.77.0.150"])],
            stdout=self.out, stderr=subprocess.STDOUT,
            env={**os.environ, "EMBEDBUILD_STORE": str(store), "COLUMNS": "200"})

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def wait_for(self, pattern: str, timeout: float = 300, after: int = 0) -> int:
        """Until a line (from line ``after`` on) matches; returns the line's index."""
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.lines()[after:], after):
                if re.search(pattern, line):
                    return i
            assert self.proc.poll() is None, "serve exited:\n" + self.log.read_text()
            assert time.monotonic() < deadline, f"no {pattern!r}:\n" + self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)
        self.out.close()


def guest(net: BenchNetwork, n: int, mac: str, workdir: Path) -> Target:
    """A qemu-arm-virt guest with this MAC at tap n of the fleet's LAN; its static
    address (before DHCP) is its own too."""
    board = load_board("qemu-arm-virt")
    link = LanLink(server=SERVER, device=IPv4Interface(f"10.77.0.{30 + n}/24"))
    machine = QemuMachine(spec=board.qemu, flash_size=board.flash.size, mac=mac)
    return Target(board, Bench(SerialLine(baud=board.serial.baud), link, QemuPower(),
                               machine), workdir, network=net.port(n))


def report(target: Target) -> dict[str, str]:
    """What the booted guest says: its device name and build from its kernel command
    line, its hostname, and the sha256 of its /init."""
    out = target.shell().succeed("cat /proc/cmdline; hostname; sha256sum /init")
    cmdline, hostname, init = out.splitlines()[:3]
    args = dict(w.split("=", 1) for w in cmdline.split() if "=" in w)
    return {"device": args.get("embedbuild.device", ""), "build": args["embedbuild.build"],
            "role": args.get("fleet.role", ""), "hostname": hostname,
            "init": init.split()[0]}


def init_sha256(tftp: Path, key: str) -> str:
    """sha256 of /init in a served build's initramfs (its concatenated gzip segments)."""
    data = gzip.decompress((tftp / "builds" / key / "initramfs.cpio.gz").read_bytes())
    init = next(e for e in read_newc(data) if e.path == "init")
    return hashlib.sha256(init.data).hexdigest()


def test_three_guests_boot_their_own_builds_while_one_is_swapped(
        session_store, arm_result, tmp_path):
    inv = tmp_path / "fleet.toml"
    (tmp_path / "b.toml").write_text('hostname = "fleet-b"\n')
    inventory(inv, {"dev01": None, "dev02": None, "dev03": None})
    t0 = time.monotonic()
    with BenchNetwork(LanLink(server=SERVER, device=IPv4Interface("10.77.0.2/24")),
                      taps=4) as net:
        serve = Serve(net, inv, tmp_path / "serve", session_store)
        try:
            serve.wait_for(r"unknown devices: boots builds/")
            started = time.monotonic() - t0
            tftp = tmp_path / "serve" / "tftp"
            base = re.search(r"kernel builds/(\w+)/",
                             (tftp / "pxelinux.cfg" / "01-52-54-00-12-34-01").read_text())[1]
            spare = re.search(r"kernel builds/(\w+)/",
                              (tftp / "pxelinux.cfg" / "default").read_text())[1]
            assert base == arm_result.name.split("-")[0] and spare != base
            guests = {name: guest(net, i, MACS[name], tmp_path / name)
                      for i, name in enumerate(MACS)}
            seen: dict[str, dict[str, str]] = {}
            errors: list[BaseException] = []

            def boot(name: str) -> None:
                try:
                    guests[name].boot(PxeBoot(dhcp=True), READY_LINE, timeout=120)
                    seen[name] = report(guests[name])
                except BaseException as e:  # reported below
                    errors.append(e)

            mark = len(serve.lines())
            threads = [threading.Thread(target=boot, args=(n,)) for n in MACS]
            t1 = time.monotonic()
            for t in threads:
                t.start()
            # As soon as dev01 has read its configuration, swap its build (the spare's is
            # built already: the swap is a rename) while all three are loading.
            serve.wait_for(r"^\S+ dev01 \(10\.77\.0\.11\): sent pxelinux\.cfg/01-52-54-00-12-"
                           r"34-01", 120, mark)
            inventory(inv, {"dev01": "b.toml", "dev02": None, "dev03": None})
            serve.wait_for(rf"dev01 \(52:54:00:12:34:01\): boots builds/{spare}", 60, mark)
            for t in threads:
                t.join(300)
            three = time.monotonic() - t1
            assert not errors, errors
            for name in MACS:
                s = seen[name]
                # Its own name, and the build its configuration named, whole: that build's
                # /init and hostname (every file of one boot from one folder).
                assert s["device"] == name and s["build"] == base, (name, s)
                assert s["init"] == init_sha256(tftp, base) and s["hostname"] == "arm-virt"
            for target in guests.values():
                target.__exit__(None, None, None)
            # dev01 boots again: the swapped build, whole.
            with guest(net, 0, MACS["dev01"], tmp_path / "dev01-again") as again:
                again.boot(PxeBoot(dhcp=True), READY_LINE, timeout=120)
                s = report(again)
            assert (s["device"], s["build"], s["hostname"]) == ("dev01", spare, "fleet-b")
            assert s["init"] == init_sha256(tftp, spare) != init_sha256(tftp, base)
            # An unknown MAC gets the default (the spare build, no device name).
            with guest(net, 3, UNKNOWN_MAC, tmp_path / "unknown") as stranger:
                stranger.boot(PxeBoot(dhcp=True), READY_LINE, timeout=120)
                s = report(stranger)
            assert (s["device"], s["build"], s["role"]) == ("", spare, "spare")
            # Deny mode: without [unknown], an unknown device gets nothing, and serve says so.
            mark = len(serve.lines())
            inventory(inv, {"dev01": "b.toml", "dev02": None, "dev03": None}, unknown=False)
            serve.proc.send_signal(signal.SIGHUP)  # at once (else at the next look, 0.5 s)
            serve.wait_for(r"unknown devices: refused \(the inventory has no \[unknown\]\)",
                           60, mark)
            serve.wait_for(r"woken \(SIGHUP\): re-reading the inventory", 60, mark)
            assert not (tftp / "pxelinux.cfg" / "default").exists()
            with guest(net, 3, UNKNOWN_MAC, tmp_path / "denied") as stranger, \
                    pytest.raises(BootError, match="`pxe get` found no configuration"):
                stranger.boot(PxeBoot(dhcp=True), READY_LINE, timeout=120)
            serve.wait_for(r"unknown device 52:54:00:12:34:99 at 10\.77\.0\.1\d\d: refused",
                           30, mark)
        finally:
            serve.stop()
    log = serve.log.read_text()
    # DHCP gave each device its inventory address: their transfers came from there.
    for i, name in enumerate(MACS, 1):
        assert f"{name} (10.77.0.1{i}): sent builds/{base}/zImage" in log
    print(f"serve up {started:.1f} s, three guests at once {three:.1f} s, all "
          f"{time.monotonic() - t0:.1f} s")
