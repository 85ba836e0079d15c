"""Resources: what a bench has, as data only (labgrid's manner). Drivers act on them.

- SerialLine: where the board's console is and how fast and how gently to write to it.
- LanLink: this machine's address and the board's on one network, as one value.
- A power switch: ManualPower (a person), QemuPower (QMP), CommandPower (a relay's CLI).
- QemuMachine: the QEMU model of a board and what is attached to it.
- LabgridPlace: a place of a shared lab whose serial port the board's console is.

Nothing here opens, starts or sends anything; values that come from a person (the
command line, the pytest plugin) are validated here, with errors naming the option.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from embedbuild.errors import EmbedbuildError
from embedbuild.model.board import Qemu
from embedbuild.pxe import MacAddress


class _Resource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SerialLine(_Resource):
    """A board's console line.

    Args:
        port: a device path (/dev/ttyUSB0), a pyserial URL (rfc2217://HOST:PORT) or
            None: the pty of the board's QEMU model, known once it runs.
        baud: line speed.
        chunk: bytes written at once (0: whole lines); UARTs without flow control need less.
        delay: seconds between chunks.
    """

    port: str | None = None
    baud: int = Field(default=115200, gt=0)
    chunk: int = Field(default=0, ge=0)
    delay: float = Field(default=0.0, ge=0)

    @property
    def is_url(self) -> bool:
        """True for a serial server's URL (a remote rig), False for a device or QEMU's pty."""
        return self.port is not None and "://" in self.port


def _address(text: str, option: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise EmbedbuildError(f"{option} {text!r} is not an IPv4 address",
                              hint="give a dotted address such as 192.168.1.254") from None


class LanLink(_Resource):
    """This machine and the board on one IPv4 network: one value instead of three.

    Args:
        server: this machine's interface address (where the board finds the TFTP
            server), with the network's prefix, e.g. 10.77.0.1/24.
        device: the address the board is given, on the same network.
    """

    server: ipaddress.IPv4Interface
    device: ipaddress.IPv4Interface

    def model_post_init(self, _context) -> None:
        if self.server.network != self.device.network:
            raise EmbedbuildError(f"the board's address {self.device} and this machine's "
                                  f"{self.server} are on different networks",
                                  hint="give both addresses on one network (--netmask)")
        if self.server.ip == self.device.ip:
            raise EmbedbuildError(f"the board's address {self.device.ip} is this machine's",
                                  hint=f"give the board another address in {self.server.network}")

    @classmethod
    def parse(cls, server_ip: str, device_ip: str, netmask: str = "255.255.255.0") -> LanLink:
        """The link from the command line's --server-ip, --device-ip and --netmask."""
        server, device = _address(server_ip, "--server-ip"), _address(device_ip, "--device-ip")
        try:
            net = ipaddress.IPv4Network(f"0.0.0.0/{netmask}")
        except ValueError:
            raise EmbedbuildError(f"--netmask {netmask!r} is not a netmask",
                                  hint="give one such as 255.255.255.0 or 24") from None
        return cls(server=ipaddress.IPv4Interface(f"{server}/{net.prefixlen}"),
                   device=ipaddress.IPv4Interface(f"{device}/{net.prefixlen}"))

    @classmethod
    def around(cls, device: ipaddress.IPv4Interface) -> LanLink:
        """A link for a board that has ``device``: this machine takes the network's first
        other address (a QEMU bench network built for the board's own address)."""
        hosts = device.network.hosts()
        server = next(hosts)
        if server == device.ip:
            server = next(hosts)
        return cls(server=ipaddress.IPv4Interface(f"{server}/{device.network.prefixlen}"),
                   device=device)

    @property
    def server_ip(self) -> str:
        return str(self.server.ip)

    @property
    def device_ip(self) -> str:
        return str(self.device.ip)

    @property
    def netmask(self) -> str:
        return str(self.server.netmask)

    @property
    def prefix(self) -> int:
        return self.server.network.prefixlen


# The QEMU bench network when the board's system declares no static address.
DEFAULT_LINK = LanLink(server=ipaddress.IPv4Interface("10.77.0.1/24"),
                       device=ipaddress.IPv4Interface("10.77.0.2/24"))


class ManualPower(_Resource):
    """A person switches the board on (or resets it) when asked.

    Args:
        timeout: seconds they get before the wait gives up and says what arrived.
    """

    kind: Literal["manual"] = "manual"
    timeout: float = Field(default=300.0, gt=0)


class QemuPower(_Resource):
    """The QEMU model's CPU, started and reset through QMP."""

    kind: Literal["qemu"] = "qemu"


class CommandPower(_Resource):
    """Commands on this machine that switch the board, e.g. a USB relay's CLI.

    Args:
        on: shell command that powers the board on.
        off: shell command that powers it off (None: left on at the end).
        timeout: seconds each command may take.
    """

    kind: Literal["command"] = "command"
    on: str = Field(min_length=1)
    off: str | None = Field(default=None, min_length=1)
    timeout: float = Field(default=30.0, gt=0)


PowerSwitch = ManualPower | QemuPower | CommandPower


class LabgridPlace(_Resource):
    """A place of a labgrid lab: the board's serial port (and whatever else the lab
    gives it) held through the lab's coordinator while embedbuild uses it.

    Args:
        name: the place's name.
        coordinator: the coordinator, HOST[:PORT] (labgrid's default port 20408).
        timeout: seconds to wait for the place while someone else holds it.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    coordinator: str = Field(default="127.0.0.1:20408", min_length=1)
    timeout: float = Field(default=600.0, gt=0)


class QemuMachine(_Resource):
    """A board's QEMU model and what is attached to it.

    Args:
        spec: the board's [qemu] section.
        firmware: the bootloader QEMU starts (None: the spec's), e.g. a U-Boot
            embedbuild built.
        flash: the file backing the board's flash (spec.pflash_unit).
        flash_size: its size in bytes (the board's [flash] size), made erased if missing.
        disk: an SD-card image attached as spec.sd_device.
        console_link: where QEMU links its serial pty for a serial server (ser2net)
            configured with a fixed path; the console is then that server's URL.
        mac: the NIC's MAC address (None: QEMU's default, 52:54:00:12:34:56); boards
            sharing one bench LAN need their own, and a PXE boot is looked up by it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spec: Qemu
    firmware: Path | None = None
    flash: Path | None = None
    flash_size: int = 0
    disk: Path | None = None
    console_link: Path | None = None
    mac: MacAddress | None = None
