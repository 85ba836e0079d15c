"""A DHCP server for a private bench LAN: Debian's dnsmasq in DHCP-only mode.

Why dnsmasq: one small program (Debian's dnsmasq-base, no service of its own) that does
DHCP alone with ``--port=0`` (its DNS server off), binds to exactly one interface
(``--bind-interfaces``), gives fixed addresses by MAC from a hosts file it re-reads on
SIGHUP (a fleet's inventory changes without a restart, leases kept), and names itself
as the next server, which is where U-Boot's `dhcp` takes ``serverip`` from. ISC's
dhcpd is end-of-life and Kea needs a configuration database for the same; U-Boot's
bootp needs nothing more.

It answers only on the interface named, never on one that carries the machine's
default route (a DHCP server there would answer the office network's machines).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.netns import uninterrupted

LEASE = "1h"


@dataclass(frozen=True)
class FixedAddress:
    """An address given to one MAC (and the name sent with it)."""

    mac: str
    ip: ipaddress.IPv4Address
    name: str


def _ip_json(netns: str | None, *args: str) -> list[dict]:
    argv = ["ip", *(["-n", netns] if netns else []), "-j", *args]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode:
        raise EmbedbuildError(f"`{' '.join(argv)}` failed: {p.stderr.strip()}")
    return json.loads(p.stdout or "[]")


@dataclass
class DhcpServer:
    """dnsmasq serving addresses ``first``..``last`` on ``interface``, naming ``server``
    (this machine's address there, where the TFTP server listens) as the next server.

    Args:
        interface: the bench LAN's interface (a bridge or a port on its own network).
        first, last: the range for devices without a fixed address.
        server: this machine's address on that interface.
        netns: the network namespace name it runs in (None: this process's).
        log: where dnsmasq writes what it did (None: nowhere).
    """

    interface: str
    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address
    server: ipaddress.IPv4Address
    netns: str | None = None
    log: Path | None = None

    def __post_init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.folder: Path | None = None
        self.network: ipaddress.IPv4Network | None = None

    def check(self) -> ipaddress.IPv4Network:
        """Refuse a missing interface, one with the default route, a server address that
        is not the interface's, a range outside its network; returns the network."""
        if shutil.which("dnsmasq") is None:
            raise EmbedbuildError("no dnsmasq on this machine: the DHCP server is dnsmasq",
                                  hint="apt-get install dnsmasq-base (tools/setup does)")
        if self.interface == "lo":
            raise EmbedbuildError("DHCP on the loopback interface serves nobody",
                                  hint="name the bench LAN's interface")
        links = {a["ifname"]: a for a in _ip_json(self.netns, "-4", "addr", "show")}
        if self.interface not in links:
            raise EmbedbuildError(f"no interface {self.interface} here",
                                  hint="name the bench LAN's interface (see `ip addr`)")
        for route in _ip_json(self.netns, "route", "show", "default"):
            if route.get("dev") == self.interface:
                raise EmbedbuildError(
                    f"{self.interface} carries this machine's default route: a DHCP server "
                    "there would answer every machine on that network",
                    hint="give the devices a LAN of their own (a bridge or a spare port)")
        nets = [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
                for a in links[self.interface].get("addr_info", [])]
        mine = [n for n in nets if n.ip == self.server]
        if not mine:
            raise EmbedbuildError(f"{self.server} is not an address of {self.interface} "
                                  f"({', '.join(map(str, nets)) or 'it has none'})",
                                  hint="listen on the interface's own address")
        net = mine[0].network
        for end in (self.first, self.last):
            if end not in net or end in (net.network_address, net.broadcast_address):
                raise EmbedbuildError(f"the DHCP range's {end} is not a host of {net}",
                                      hint=f"give a range inside {net}")
        if int(self.first) > int(self.last) or \
                int(self.first) <= int(self.server) <= int(self.last):
            raise EmbedbuildError(f"the DHCP range {self.first}-{self.last} is empty or "
                                  f"holds this machine's {self.server}",
                                  hint="give FIRST,LAST with FIRST <= LAST around no "
                                  "address of this machine")
        self.network = net
        return net

    def check_fixed(self, fixed: list[FixedAddress]) -> None:
        """Refuse fixed addresses outside the LAN or on this machine's."""
        net = self.network or self.check()
        for f in fixed:
            if f.ip not in net or f.ip == self.server:
                raise EmbedbuildError(f"{f.name}'s address {f.ip} is not a device's address "
                                      f"on {self.interface} ({net}, this machine "
                                      f"{self.server})", hint="give it one in that network")

    def start(self, fixed: list[FixedAddress]) -> DhcpServer:
        """Start dnsmasq with these fixed addresses."""
        self.check_fixed(fixed)
        # Readable after dnsmasq gives up root (it re-reads the hosts file then).
        self.folder = Path(tempfile.mkdtemp(prefix="embedbuild-dhcp-"))
        self.folder.chmod(0o755)
        self._write(fixed)
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                "--no-resolv", "--no-hosts", f"--interface={self.interface}",
                "--bind-interfaces", "--except-interface=lo", "--dhcp-authoritative",
                f"--dhcp-range={self.first},{self.last},{LEASE}",
                f"--dhcp-hostsfile={self.folder / 'hosts'}",
                f"--dhcp-leasefile={self.folder / 'leases'}", "--pid-file=",
                # No gateway: the bench LAN leads nowhere else.
                "--dhcp-option=option:router",
                f"--log-facility={self.log or '/dev/null'}", "--log-dhcp"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self.proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", *argv],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        try:
            self._wait_bound()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_bound(self, timeout: float = 10) -> None:
        """Until dnsmasq listens on port 67 (or has died saying why)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip() \
                    if self.proc.stderr else ""
                raise EmbedbuildError(f"dnsmasq exited at start: {err[-500:]}",
                                      hint="is another DHCP server on this interface?")
            if self._listening():
                return
            time.sleep(0.05)
        raise EmbedbuildError("dnsmasq did not start in time")

    def _listening(self) -> bool:
        argv = ["ss", "-Hlun", "sport = :67"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return bool(subprocess.run(argv, capture_output=True, text=True).stdout.strip())

    def _write(self, fixed: list[FixedAddress]) -> None:
        assert self.folder is not None
        tmp = self.folder / "hosts.tmp"
        tmp.write_text("".join(f"{f.mac},{f.ip},{f.name}\n" for f in fixed))
        tmp.chmod(0o644)
        os.replace(tmp, self.folder / "hosts")

    def update(self, fixed: list[FixedAddress]) -> None:
        """New fixed addresses: dnsmasq re-reads them on SIGHUP (leases are kept)."""
        self.check_fixed(fixed)
        self._write(fixed)
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self) -> None:
        """Stop dnsmasq and remove its files."""
        with uninterrupted():
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
