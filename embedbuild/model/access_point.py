"""The access point a system runs: its radios (each one SSID and WPA mode), the LAN
bridge they join with the board's wired ports, the LAN address and its DHCP range.

The board says which radios and wired interfaces it has (``[[radios]]``,
``interfaces``: model/board.py); a system's ``[access_point]`` uses them by name, which
the loader checks against the board (load.py). The passphrase is never in the system
file: ``passphrase_file`` names a file outside the project, which the loader reads,
checks and keeps in the model as a private, never-printed value.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, Self

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from embedbuild.model.base import Strict

# Linux's interface names: at most 15 bytes (IFNAMSIZ), no "/", ":" or whitespace.
Interface = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")]
RadioName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=32)]
Band = Literal["2g", "5g"]
Mode = Literal["wpa2", "wpa3", "wpa2-wpa3"]

# The channels an access point may use per band (20 MHz; channel 14 is Japan's and
# 802.11b only; 5 GHz: UNII-1..3, DFS channels included, the regulatory database decides).
CHANNELS: dict[str, tuple[int, ...]] = {
    "2g": tuple(range(1, 14)),
    "5g": (*range(36, 65, 4), *range(100, 145, 4), *range(149, 166, 4)),
}
# hostapd's hw_mode per band.
HW_MODE = {"2g": "g", "5g": "a"}
# What the passphrase may hold (IEEE 802.11i's passphrase: 8..63 printable ASCII).
PASSPHRASE_MIN, PASSPHRASE_MAX = 8, 63


class Radio(Strict):
    """A radio of the board (board data: ``[[radios]]`` in board.toml).

    Args:
        name: how systems name it (``radio0``).
        phy: the wiphy the kernel registers for it (``phy0``).
        interface: the network interface the kernel makes on it (``wlan0``), which
            hostapd runs the access point on.
        band: ``2g`` or ``5g``.
    """

    name: RadioName
    phy: str = Field(pattern=r"^phy[0-9]{1,3}$")
    interface: Interface
    band: Band


def _ssid(value: str) -> str:
    # 802.11 SSIDs are 0..32 octets; an AP needs one. hostapd gets it as hex (ssid2),
    # so any byte is safe, but a NUL would end it in every C program that prints it.
    size = len(value.encode())
    if not 1 <= size <= 32:
        raise ValueError(f"an SSID is 1 to 32 bytes (UTF-8), this one is {size}")
    if "\x00" in value:
        raise ValueError("an SSID cannot hold a NUL character")
    return value


class RadioUse(Strict):
    """One radio of the board as an access point.

    Args:
        radio: a radio the board declares.
        ssid: the network's name, 1..32 bytes.
        mode: ``wpa2`` (WPA2-PSK), ``wpa3`` (SAE with management frame protection
            required) or ``wpa2-wpa3`` (both: PMF optional, required for SAE stations).
        channel: a channel of the radio's band (checked against the board's radio).
    """

    radio: RadioName
    ssid: str
    mode: Mode
    channel: int

    @field_validator("ssid")
    @classmethod
    def _ssid_bytes(cls, v: str) -> str:
        return _ssid(v)


class Dhcp(Strict):
    """The DHCP server on the LAN (busybox udhcpd).

    Args:
        start: the first address it hands out.
        end: the last.
        lease: seconds a lease lasts.
    """

    start: str
    end: str
    lease: int = Field(default=43200, ge=60, le=30 * 86400)

    @field_validator("start", "end")
    @classmethod
    def _ipv4(cls, v: str) -> str:
        try:
            ipaddress.IPv4Address(v)
        except ValueError as e:
            raise ValueError(f"{v!r} is not an IPv4 address: {e}") from None
        return v


class Lan(Strict):
    """The LAN: a bridge of the board's wired ports and the radios, with its address.

    Args:
        bridge: the bridge's interface name.
        members: wired interfaces of the board joined to it (the radios join through
            hostapd's ``bridge=``); may be empty.
        address: the access point's address on the LAN, with the prefix.
        dhcp: a DHCP server for the LAN, or none.
    """

    bridge: Interface = "br-lan"
    members: list[Interface] = []
    address: str
    dhcp: Dhcp | None = None

    @field_validator("address")
    @classmethod
    def _cidr(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError("give the prefix length too, e.g. 192.168.1.1/24")
        try:
            iface = ipaddress.IPv4Interface(v)
        except ValueError as e:
            raise ValueError(f"{v!r} is not an IPv4 address/prefix: {e}") from None
        net = iface.network
        if net.prefixlen > 30 or iface.ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"{iface.ip} is not a host address of a LAN in {net}")
        return v

    @field_validator("members")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("an interface is listed twice")
        return v

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.bridge in self.members:
            raise ValueError(f"the bridge {self.bridge} cannot be its own member")
        if self.dhcp is None:
            return self
        iface = ipaddress.IPv4Interface(self.address)
        net = iface.network
        start, end = ipaddress.IPv4Address(self.dhcp.start), ipaddress.IPv4Address(self.dhcp.end)
        for what, a in (("start", start), ("end", end)):
            if a not in net or a in (net.network_address, net.broadcast_address):
                raise ValueError(f"dhcp.{what} {a} is not a host address of the LAN "
                                 f"{net} (address {self.address})")
        if start > end:
            raise ValueError(f"dhcp.start {start} comes after dhcp.end {end}")
        if start <= iface.ip <= end:
            raise ValueError(f"the DHCP range {start}..{end} holds the access point's own "
                             f"address {iface.ip}")
        return self

    @property
    def ip(self) -> str:
        """The access point's own address on the LAN."""
        return str(ipaddress.IPv4Interface(self.address).ip)


class AccessPoint(Strict):
    """A system's access point.

    Args:
        country: where it runs (ISO 3166-1 alpha-2): the regulatory domain hostapd sets.
        passphrase_file: the file holding the WPA passphrase (one line, 8..63 printable
            ASCII characters), outside the project: a name is looked up in the secrets
            folder ($EMBEDBUILD_SECRETS, default ~/.config/embedbuild/secrets); a path
            (absolute or ~) is taken as it is. It must be readable by its owner only.
        lan: the LAN bridge, its address and DHCP.
        radios: the board's radios it runs on, one network each.
    """

    country: str
    passphrase_file: str = Field(min_length=1)
    lan: Lan
    radios: list[RadioUse] = Field(min_length=1)
    # Read by the loader from passphrase_file; never printed or dumped.
    _passphrase: SecretStr | None = PrivateAttr(default=None)

    @field_validator("country")
    @classmethod
    def _country(cls, v: str) -> str:
        if v == "00":
            raise ValueError("00 is the world domain, not a country: give where the access "
                             "point runs (e.g. DE)")
        if not re.fullmatch(r"[A-Z]{2}", v):
            raise ValueError(f"{v!r} is not a country code: two capital letters (ISO 3166-1 "
                             "alpha-2, e.g. DE)")
        return v

    @field_validator("radios")
    @classmethod
    def _one_network_per_radio(cls, v: list[RadioUse]) -> list[RadioUse]:
        names = [r.radio for r in v]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"radio {dup[0]} is used twice: one network per radio")
        return v

    @property
    def passphrase(self) -> str:
        """The passphrase the loader read (an error to ask before it did)."""
        if self._passphrase is None:
            raise RuntimeError("the access point's passphrase was not read by the loader")
        return self._passphrase.get_secret_value()

    def with_passphrase(self, passphrase: str) -> AccessPoint:
        """A copy holding the passphrase (the loader's, after it checked it)."""
        copy = self.model_copy()
        copy._passphrase = SecretStr(passphrase)
        return copy

    def service_names(self) -> list[str]:
        """The services the access point adds to the system: the bridge, one hostapd per
        radio, the DHCP server."""
        return ["lan", *(f"hostapd-{r.radio}" for r in self.radios),
                *(["dhcpd"] if self.lan.dhcp else [])]


def check_passphrase(text: str) -> str:
    """The passphrase a file holds (one line; the final newline is not part of it), or
    ValueError saying what is wrong, without showing it."""
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if "\n" in text:
        raise ValueError("it holds more than one line: the passphrase is the only line")
    if not PASSPHRASE_MIN <= len(text) <= PASSPHRASE_MAX:
        raise ValueError(f"the passphrase is {len(text)} characters long: WPA takes "
                         f"{PASSPHRASE_MIN} to {PASSPHRASE_MAX}")
    if bad := [c for c in text if not " " <= c <= "~"]:
        raise ValueError(f"the passphrase holds {len(bad)} character(s) other than printable "
                         "ASCII (space to ~), which WPA passphrases are made of")
    return text
