"""The system model: what runs on the board once the kernel starts.

Declared in a board's [system] table or in a system file (``--system``), so one
board can run several systems. Validated once; checked for unknown services and
dependency cycles here, and overlays resolved to their folders by the loader.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from embedbuild.model.base import Strict

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=32)]

# What the init prints once every service is up: what rigs and tests wait for.
READY_LINE = "embedbuild: system ready"


class Service(Strict):
    """A supervised service.

    Args:
        name: unique name (also its pid file, /run/svc/NAME.pid).
        command: shell command that runs in the foreground.
        depends_on: services that must be up before this one starts.
        respawn: restart it when it exits (with back-off), or report and leave it.
        environment: variables set for it.
        output: where its stdout/stderr go: the console or syslog.
        ready: shell test that says it is up (default: still running after a moment).
    """

    name: Name
    command: str = Field(min_length=1)
    depends_on: list[Name] = []
    respawn: bool = True
    environment: dict[str, str] = {}
    output: Literal["console", "syslog"] = "console"
    ready: str | None = None

    @field_validator("environment")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise ValueError(f"{k!r} is not a valid environment variable name")
        return v


class Network(Strict):
    """The board's network: a static address or DHCP on one interface.

    Args:
        interface: e.g. eth0.
        address: static address with prefix, e.g. 10.77.0.2/24; omit for DHCP.
        gateway: default route for a static address.
        dhcp: use busybox udhcpc.
    """

    interface: str = "eth0"
    address: str | None = None
    gateway: str | None = None
    dhcp: bool = False

    @field_validator("address")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.IPv4Interface(v)
            if "/" not in v:
                raise ValueError("give the prefix length too, e.g. 10.77.0.2/24")
        return v

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if self.dhcp == (self.address is not None):
            raise ValueError("give either address (static) or dhcp = true")
        return self


class OverlayEntry(Strict):
    """Owner and mode of a file or folder of an overlay."""

    path: str
    mode: int | None = Field(default=None, ge=0, le=0o7777)
    uid: int = 0
    gid: int = 0


class OverlayNode(Strict):
    """A device node or fifo an overlay adds (no root needed on the build host)."""

    path: str
    type: Literal["char", "block", "fifo"]
    major: int = 0
    minor: int = 0
    mode: int = Field(default=0o600, ge=0, le=0o7777)
    uid: int = 0
    gid: int = 0


class OverlayAttrs(Strict):
    """overlays/NAME.toml: attributes the folder itself cannot carry."""

    entry: list[OverlayEntry] = []
    node: list[OverlayNode] = []


class Overlay(Strict):
    """An overlay as the system names it, resolved by the loader to its folder and
    attributes (a system file says only the name).

    Args:
        name: the folder's name under an overlays folder.
        dir: the folder found for it.
        attrs_file: overlays/NAME.toml, when there is one.
        attrs: what that file says.
    """

    name: Name
    dir: Path
    attrs_file: Path | None = None
    attrs: OverlayAttrs = OverlayAttrs()

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any, info: ValidationInfo) -> Any:
        # A name is resolved by the loader's finder (search path, attribute file).
        if isinstance(data, str):
            find = (info.context or {}).get("find_overlay")
            if find is None:
                raise ValueError(f"overlay {data!r} cannot be resolved here")
            return dict(find(data))  # its fields: pydantic wants a mapping here
        return data


class System(Strict):
    """What the init sets up and runs.

    Args:
        hostname: the system's host name.
        console_shell: a root shell on the serial console (physical access).
        network: the network setup; omit for none.
        services: supervised services, started in dependency order.
        authorized_keys: SSH public keys dropbear accepts for root (password logins are off).
        overlays: folders copied into the rootfs, in order (named in the file,
            resolved to their folders and attributes at load).
        packages: extra packages beside busybox (e.g. "dropbear").
        compression: how each initramfs segment is compressed.
        initramfs: "separate" (loaded by U-Boot) or "builtin" (inside the kernel image).
    """

    hostname: str = Field(default="embedbuild", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    console_shell: bool = True
    network: Network | None = None
    services: list[Service] = []
    authorized_keys: list[str] = []
    overlays: list[Overlay] = []
    packages: list[Literal["dropbear"]] = []
    compression: Literal["gzip", "xz", "lzma", "zstd", "lz4", "none"] = "gzip"
    initramfs: Literal["separate", "builtin"] = "separate"

    @field_validator("authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            if not re.match(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$", k):
                raise ValueError(f"not an SSH public key line: {k[:40]!r}")
        return v

    @model_validator(mode="after")
    def _builtin_uncompressed(self) -> Self:
        if self.initramfs == "builtin" and self.compression != "none":
            raise ValueError('initramfs = "builtin" needs compression = "none": the kernel '
                             "compresses what it builds in (CONFIG_INITRAMFS_COMPRESSION_*)")
        return self

    @field_validator("overlays")
    @classmethod
    def _unique_overlays(cls, v: list[Overlay]) -> list[Overlay]:
        names = [o.name for o in v]
        if len(set(names)) != len(names):
            raise ValueError("an overlay is listed twice")
        return v

    @model_validator(mode="after")
    def _services(self) -> Self:
        names = [s.name for s in self.services]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"service names must be unique: {', '.join(sorted(dup))}")
        for s in self.services:
            for d in s.depends_on:
                if d not in names:
                    raise ValueError(f"service {s.name!r} depends on unknown service {d!r} "
                                     f"(known: {', '.join(names)})")
        service_order(self.services)  # refuses cycles
        return self


def service_order(services: list[Service]) -> list[Service]:
    """Services sorted so each comes after what it depends on; a cycle is an error naming it."""
    by_name = {s.name: s for s in services}
    done: list[Service] = []
    state: dict[str, int] = {}  # 1: visiting, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name):], name]
            raise ValueError(f"dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for d in by_name[name].depends_on:
            visit(d, [*path, name])
        state[name] = 2
        done.append(by_name[name])

    for s in services:
        visit(s.name, [])
    return done


def service_waves(services: list[Service]) -> list[list[Service]]:
    """Services grouped so each group depends only on earlier groups: a group starts
    together once the one before it is up."""
    level: dict[str, int] = {}
    for s in service_order(services):
        level[s.name] = 1 + max((level[d] for d in s.depends_on), default=-1)
    waves: list[list[Service]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for s in service_order(services):
        waves[level[s.name]].append(s)
    return waves
