"""Checks made before anyone is asked to power a board on: the serial device (or the
serial server of a remote rig), this machine's address on the board's network, the
TFTP port, the files to serve.

Each failure is one message saying what is wrong and the command that fixes it;
nothing is left open or listening by a check.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import EmbedbuildError

TFTP_PORT = 69


class PreflightError(EmbedbuildError):
    """Something on this machine or its serial line would make the boot fail."""


@dataclass(frozen=True)
class Interface:
    """A network interface of this machine and its IPv4 addresses."""

    name: str
    up: bool
    addresses: tuple[ipaddress.IPv4Interface, ...]


def interfaces() -> list[Interface]:
    """This machine's interfaces (in this network namespace), from `ip -j addr`."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise PreflightError(f"cannot list network interfaces: {e}",
                             hint="install iproute2 (tools/setup does)") from None
    found = []
    for i in json.loads(out):
        addrs = tuple(ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
                      for a in i.get("addr_info", []) if a.get("family") == "inet")
        up = "UP" in i.get("flags", []) and i.get("operstate") != "DOWN"
        found.append(Interface(i["ifname"], up, addrs))
    return found


def _ip(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise PreflightError(f"{what} {text!r} is not an IPv4 address",
                             hint="give a dotted address such as 192.168.1.254") from None


def check_addresses(server_ip: str, device_ip: str) -> Interface:
    """The server address must be this machine's, on an interface that is up, and the
    device address in that interface's subnet and not the server's. Returns the
    interface."""
    server, device = _ip(server_ip, "--server-ip"), _ip(device_ip, "--device-ip")
    ifaces = interfaces()
    owner = next(((i, a) for i in ifaces for a in i.addresses if a.ip == server), None)
    if owner is None:
        listing = "; ".join(f"{i.name} ({', '.join(str(a) for a in i.addresses) or 'no IPv4'})"
                            for i in ifaces)
        # The interface a person most likely wired the board to: up, not loopback.
        ranked = sorted((i for i in ifaces if i.name != "lo"),
                        key=lambda i: (not i.up, not i.addresses))
        candidate = ranked[0].name if ranked else "IFACE"
        raise PreflightError(
            f"{server} (--server-ip) is not an address of this machine; its interfaces: "
            f"{listing}",
            hint=f"add it to the interface wired to the board: ip addr add {server}/24 dev "
            f"{candidate} (and ip link set {candidate} up)")
    iface, addr = owner
    if not iface.up:
        raise PreflightError(f"{server} is on {iface.name}, which is down",
                             hint=f"bring it up: ip link set {iface.name} up (and check the "
                             "cable to the board)")
    if device == server:
        raise PreflightError(f"--device-ip {device} is this machine's own address",
                             hint=f"give the board another address in {addr.network}")
    if device not in addr.network:
        raise PreflightError(
            f"--device-ip {device} is not in {iface.name}'s subnet {addr.network}",
            hint=f"give the board an address in {addr.network}, or add one of {device}'s "
            f"subnet to {iface.name}")
    return iface


def udp_holders(port: int) -> list[str]:
    """'PID NAME' of each process with a UDP socket on this port (from /proc)."""
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return _holders({f"socket:[{i}]" for i in inodes})


def file_holders(path: str) -> list[str]:
    """'PID NAME' of each process that has ``path`` open."""
    real = os.path.realpath(path)
    return _holders({real})


def _holders(targets: set[str]) -> list[str]:
    found = []
    if not targets:
        return found
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in targets for fd in fds):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                found.append(f"{pid} {name}")
    return found


def check_port(server_ip: str, port: int = TFTP_PORT) -> None:
    """The TFTP port must be free on the server address (and bindable by us)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((server_ip, port))
    except PermissionError:
        raise PreflightError(f"port {port}/udp needs root (or CAP_NET_BIND_SERVICE)",
                             hint="run embedbuild as root, e.g. sudo .venv/bin/embedbuild "
                             "...") from None
    except OSError as e:
        if e.errno == errno.EADDRNOTAVAIL:
            raise PreflightError(f"{server_ip} is not an address of this machine",
                                 hint="check --server-ip (`embedbuild doctor` lists the "
                                 "interfaces)") from None
        holders = udp_holders(port)
        who = f" (held by {', '.join(holders)})" if holders else ""
        hint = ("stop it, e.g. systemctl stop tftpd-hpa" if any("tftpd" in h for h in holders)
                else "stop the other TFTP server")
        raise PreflightError(f"port {port}/udp on {server_ip} is in use{who}",
                             hint=hint) from None
    finally:
        sock.close()


URL_SCHEMES = ("rfc2217", "socket")  # pyserial URLs a serial server on a rig host answers
URL_TIMEOUT = 3.0  # seconds a serial server may take to accept a connection
URL_LISTEN = 0.5  # seconds to watch a new connection for the server hanging up at once


def is_url(port: str) -> bool:
    """True for a pyserial URL (rfc2217://host:port), False for a device path."""
    return "://" in port


def url_address(url: str) -> tuple[str, int]:
    """(host, port) of an rfc2217:// or socket:// URL; anything else is refused."""
    from urllib.parse import urlsplit

    scheme = url.split("://", 1)[0]
    if scheme not in URL_SCHEMES:
        raise PreflightError(f"--serial {url}: unknown URL scheme {scheme!r}",
                             hint="give a device path, or rfc2217://HOST:PORT (a serial server "
                             "such as ser2net) or socket://HOST:PORT (a raw TCP port)")
    hint = (f"give it as {scheme}://HOST:PORT (an IPv6 host in brackets: "
            f"{scheme}://[::1]:3001), e.g. {scheme}://rig1.lab:3001")
    # Everything that parses the URL stays inside the error path: urlsplit raises
    # ValueError for an unclosed IPv6 bracket, .port for a port out of range.
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise PreflightError(f"--serial {url}: no HOST:PORT in the URL ({e})",
                             hint=hint) from None
    if not host or not port:
        raise PreflightError(f"--serial {url}: no HOST:PORT in the URL", hint=hint)
    if parts.username is not None or parts.path not in ("", "/") or parts.fragment:
        raise PreflightError(f"--serial {url}: only HOST:PORT (and ?options) are taken, "
                             "no user, path or #fragment", hint=hint)
    return host, port


def check_serial_url(url: str, timeout: float = URL_TIMEOUT, listen: float = URL_LISTEN) -> None:
    """A serial server must accept a TCP connection on the URL's host:port within
    ``timeout`` seconds and, with ``listen``, keep it open that long: a server that
    cannot open its device (missing, or held by another client) says so and hangs up."""
    host, port = url_address(url)
    server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise PreflightError(f"serial server {server} did not answer within "
                             f"{timeout:.0f} s", hint="check the rig host's address, that "
                             "it is up, and that no firewall drops the port") from None
    except OSError as e:
        why = e.strerror or str(e)
        raise PreflightError(f"cannot reach serial server {server}: {why}",
                             hint="start the serial server on the rig host (e.g. ser2net) "
                             "and check the port in its configuration") from None
    try:
        said, closed = _hang_up(sock, listen)
    finally:
        sock.close()
    if closed:
        raise PreflightError(f"serial server {server} hung up at once"
                             + (f": {said}" if said else ""),
                             hint="its device is missing or another client holds it: check "
                             "the rig host (ser2net's connector line, who is connected)")


def _hang_up(sock: socket.socket, listen: float) -> tuple[str, bool]:
    """Read from a new connection for ``listen`` seconds: (the text it sent, telnet
    negotiation removed; whether the server closed it)."""
    import re
    import time

    got, deadline = b"", time.monotonic() + listen
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        except OSError:
            data = b""
        if not data:
            text = re.sub(rb"\xff[\xfb-\xfe].|\xff\xfa.*?\xff\xf0|\xff.", b"", got, flags=re.S)
            return text.decode(errors="replace").strip(), True
        got += data
    return "", False


def check_serial(port: str, listen: float = URL_LISTEN) -> None:
    """A serial device must exist, open, and not be held by another program; for a
    pyserial URL, the serial server must answer (check_serial_url)."""
    import serial

    if is_url(port):
        check_serial_url(port, listen=listen)
        return
    if not os.path.exists(port):
        near = sorted(str(p) for p in Path("/dev").glob("tty[UA][SC]*"))
        raise PreflightError(f"serial device {port} does not exist",
                             hint=f"plug the USB serial adapter in; present: "
                             f"{', '.join(near) or 'no /dev/ttyUSB* or /dev/ttyACM*'}")
    try:
        s = serial.serial_for_url(port, exclusive=True, timeout=0)
    except (serial.SerialException, OSError, ValueError) as e:
        holders = file_holders(port)
        if holders:
            raise PreflightError(f"serial device {port} is in use by {', '.join(holders)}",
                                 hint="close that program (a terminal such as minicom or "
                                 "screen), then try again") from None
        raise PreflightError(f"cannot open serial device {port}: {e}",
                             hint="check permissions (group dialout) and the device") from None
    s.close()


def check_files(files: list[Path]) -> None:
    """Files the board will be sent must exist."""
    for f in files:
        if not f.is_file():
            raise PreflightError(f"file to serve not found: {f}",
                                 hint="give an existing file (or build the board first)")


def preflight(port: str, server_ip: str, device_ip: str, files: list[Path] = ()) -> None:
    """Every check a serial boot needs, in the order a person would fix them."""
    check_serial(port)
    check_addresses(server_ip, device_ip)
    check_port(server_ip)
    check_files(list(files))
