"""The system model: what runs on the board once the kernel starts.

Declared in a board's [system] table or in a system file (``--system``), so one
board can run several systems. Validated once; checked for unknown services and
dependency cycles here, and overlays resolved to their folders by the loader.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from embedbuild.model.access_point import AccessPoint
from embedbuild.model.base import Strict

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=32)]


def _shell_text(value: str) -> str:
    # A shell script cannot carry a NUL byte: the rest of the value would be cut off.
    if "\x00" in value:
        raise ValueError("a NUL character cannot go into a shell script")
    return value


# Shell text the user writes on purpose (commands, ready tests, environment values):
# run as written by the init's shell, passed to it shell-quoted.
ShellText = Annotated[str, AfterValidator(_shell_text)]


def _image_path(value: str) -> str:
    # A path inside the image: the kernel unpacks the cpio as given, so it must stay in /.
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{value!r} must be a relative path inside the overlay (no leading "
                         "/, no . or .. parts, no empty parts)")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r} has a control character")
    return value


ImagePath = Annotated[str, AfterValidator(_image_path)]
# IDs the kernel stores in 32 bits; (uid_t)-1 means "no change", so it is not an owner.
Id = Annotated[int, Field(ge=0, le=0xFFFF_FFFE)]

# Key types dropbear 2022.83 accepts, each with how many strings its blob holds
# (RFC 4253 6.6, RFC 5656 3.1, RFC 8709 4, OpenSSH PROTOCOL.u2f): the type name, then
# the key's own fields.
SSH_KEY_TYPES = {"ssh-ed25519": 2, "ssh-rsa": 3, "ecdsa-sha2-nistp256": 3,
                 "ecdsa-sha2-nistp384": 3, "ecdsa-sha2-nistp521": 3,
                 "sk-ssh-ed25519@openssh.com": 3, "sk-ecdsa-sha2-nistp256@openssh.com": 4}


def _ssh_strings(blob: bytes) -> list[bytes] | None:
    """The length-prefixed strings a key blob is made of; None if it is not exactly that."""
    out = []
    while blob:
        if len(blob) < 4 or len(blob) < 4 + (n := struct.unpack(">I", blob[:4])[0]):
            return None
        out.append(blob[4:4 + n])
        blob = blob[4 + n:]
    return out


def _ssh_key(line: str) -> str:
    """Refuse what is not one OpenSSH public key line: TYPE BASE64 [COMMENT], where the
    base64 blob decodes and starts with its own TYPE (what ssh-keygen -l checks)."""
    if re.search(r"[\x00-\x1f\x7f]", line):
        raise ValueError("a key is one line: no newlines or control characters")
    kind, _, rest = line.partition(" ")
    if kind not in SSH_KEY_TYPES:
        raise ValueError(f"{kind[:40]!r} is not an SSH key type dropbear accepts "
                         f"({', '.join(SSH_KEY_TYPES)})")
    blob_text = rest.split(" ", 1)[0]
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {kind} key {blob_text[:20]!r}... is not valid base64 "
                         "(a truncated or mangled copy?)") from None
    fields = _ssh_strings(blob)
    if not fields or (len(fields) != SSH_KEY_TYPES[kind] and fields[0] == kind.encode()):
        raise ValueError(f"the {kind} key data is cut short or damaged (copy the whole line "
                         "of the .pub file)")
    if fields[0] != kind.encode():
        raise ValueError(f"the key data does not hold a {kind} key but "
                         f"{fields[0][:40].decode(errors='replace')!r}")
    return line


SshKey = Annotated[str, AfterValidator(_ssh_key)]

# $id$[rounds=N$]salt$hash: MD5, SHA-256, SHA-512 or bcrypt, which musl's crypt() checks;
# nothing that could end the /etc/shadow line early (no ':', no newline).
CRYPT_HASH = re.compile(r"\$(1|5|6|2[aby])\$(rounds=[0-9]+\$)?[./0-9A-Za-z$]{16,}")


def _crypt_hash(value: str) -> str:
    # The value is never repeated: it may be a password typed where its hash belongs.
    if not CRYPT_HASH.fullmatch(value):
        raise ValueError("not a crypt(3) password hash ($6$SALT$HASH, as `mkpasswd -m "
                         "sha-512` prints it); the password itself never goes here")
    return value


def _package(name: str, info: ValidationInfo) -> str:
    """A package a system may list: a program recipe (the loader gives the registry's
    facts: name -> "base", "library", "libc" or "program")."""
    known = (info.context or {}).get("packages")
    if known is None:
        raise ValueError(f"package {name!r} cannot be resolved here")
    if name not in known:
        kinds = {k: ", ".join(sorted(n for n, kind in known.items() if kind == k)) or "none"
                 for k in ("program", "base", "library")}
        raise ValueError(f"{name!r} is not known: a system can list {kinds['program']} "
                         f"(in every system: {kinds['base']}; libraries, which come with the "
                         f"programs that link them: {kinds['library']}; one recipe each in "
                         "embedbuild/packages/)")
    if known[name] == "base":
        raise ValueError(f"{name} is in every system already")
    if known[name] == "libc":
        raise ValueError(f"{name} is a C library: a board chooses it with [userland] libc")
    if known[name] == "library":
        raise ValueError(f"{name} is a library: list the programs that link it, which "
                         "bring it along")
    return name


Package = Annotated[str, AfterValidator(_package)]

# What the init prints once every service is up: what rigs and tests wait for.
READY_LINE = "embedbuild: system ready"


class Service(Strict):
    """A supervised service.

    Args:
        use: a default service a package offers (its fields, under its name); the
            fields given beside it replace the default's.
        name: unique name (also its pid file, /run/svc/NAME.pid).
        command: shell command that runs in the foreground.
        depends_on: services that must be up before this one starts.
        respawn: restart it when it exits (with back-off), or report and leave it.
        environment: variables set for it.
        output: where its stdout/stderr go: the console or syslog.
        ready: shell test that says it is up, tried while the service runs, at once,
            then at growing intervals from 5 ms up to 80 ms.
        ready_fd: the service tells the init it is ready by writing a line to this
            descriptor (3-9), as s6's notification-fd: the init gets it at once.
            Without ``ready`` or ``ready_fd``, the service is up once it is idle (blocked
            in the kernel, waiting for work) at two looks in a row, or has computed for
            0.2 s of CPU time; one that exits first did not come up.
    """

    use: Name | None = None
    name: Name
    command: ShellText = Field(min_length=1)
    depends_on: list[Name] = []
    respawn: bool = True
    environment: dict[str, ShellText] = {}
    output: Literal["console", "syslog"] = "console"
    ready: ShellText | None = Field(default=None, min_length=1)
    # busybox sh redirects descriptors 0-9; 0-2 are the service's stdio.
    ready_fd: int | None = Field(default=None, ge=3, le=9)

    @model_validator(mode="before")
    @classmethod
    def _package_default(cls, data: Any, info: ValidationInfo) -> Any:
        # The loader gives the services packages offer: name -> (package, fields).
        if not isinstance(data, dict) or data.get("use") is None:
            return data
        offered = (info.context or {}).get("services", {})
        if data["use"] not in offered:
            known = ", ".join(f"{n} ({p})" for n, (p, _) in sorted(offered.items()))
            raise ValueError(f"no package offers a service {data['use']!r} (offered: "
                             f"{known or 'none'})")
        return {"name": data["use"], **offered[data["use"]][1], **data}

    @field_validator("environment")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise ValueError(f"{k!r} is not a valid environment variable name")
        return v

    @model_validator(mode="after")
    def _one_readiness(self) -> Self:
        if self.ready is not None and self.ready_fd is not None:
            raise ValueError("give ready (a test the init tries) or ready_fd (the service "
                             "says it is ready), not both")
        return self


class Network(Strict):
    """The board's network: a static address or DHCP on one interface.

    Args:
        interface: e.g. eth0.
        address: static address with prefix, e.g. 10.77.0.2/24; omit for DHCP.
        gateway: default route for a static address.
        dhcp: use busybox udhcpc.
    """

    # Linux's interface names: at most 15 bytes (IFNAMSIZ), no "/", ":" or whitespace.
    interface: str = Field(default="eth0", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
    address: str | None = None
    gateway: str | None = None
    dhcp: bool = False

    @field_validator("address")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "/" not in v:
            raise ValueError("give the prefix length too, e.g. 10.77.0.2/24")
        try:
            iface = ipaddress.IPv4Interface(v)
        except ValueError as e:
            raise ValueError(f"{v!r} is not an IPv4 address/prefix: {e}") from None
        net = iface.network
        if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"{iface.ip} is the network's own or broadcast address, not a "
                             f"host's in {net}")
        return v

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ipaddress.IPv4Address(v)
            except ValueError as e:
                raise ValueError(f"{v!r} is not an IPv4 address: {e}") from None
        return v

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if self.dhcp == (self.address is not None):
            raise ValueError("give either address (static) or dhcp = true")
        if self.gateway is not None:
            if self.address is None:
                raise ValueError("gateway is for a static address: DHCP gives the route")
            iface = ipaddress.IPv4Interface(self.address)
            gw = ipaddress.IPv4Address(self.gateway)
            if gw not in iface.network or gw == iface.ip:
                raise ValueError(f"gateway {gw} must be another host of {iface.network}, "
                                 "the network the address is on")
        return self


class OverlayEntry(Strict):
    """Owner and mode of a file or folder of an overlay."""

    path: ImagePath
    mode: int | None = Field(default=None, ge=0, le=0o7777)
    uid: Id = 0
    gid: Id = 0


class OverlayNode(Strict):
    """A device node or fifo an overlay adds (no root needed on the build host)."""

    path: ImagePath
    type: Literal["char", "block", "fifo"]
    # Linux's dev_t: 12 bits of major, 20 of minor.
    major: int = Field(default=0, ge=0, le=0xFFF)
    minor: int = Field(default=0, ge=0, le=0xFFFFF)
    mode: int = Field(default=0o600, ge=0, le=0o7777)
    uid: Id = 0
    gid: Id = 0


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


# The package whose fw_setenv a system uses to mark its A/B slot good.
MARK_GOOD_PACKAGE = "libubootenv"


class Health(Strict):
    """When a system booted from an A/B slot counts as good, and marks its slot so in
    U-Boot's environment (its tries back to full): every service up, then ``check``.

    Args:
        check: shell test that must succeed besides every service being up (e.g. the
            network service answering); tried once a second.
        within: seconds the check has to succeed; after that, or when a service did not
            come up, the system restarts: the slot's try is spent.
        watchdog: arm the hardware watchdog (/dev/watchdog) at /init's start; nothing pets
            it until the slot is marked good, so a slot that hangs is reset too.
    """

    check: ShellText | None = Field(default=None, min_length=1)
    within: int = Field(default=60, ge=1, le=3600)
    watchdog: bool = True


def _system_file(value: Path, info: ValidationInfo) -> Path:
    # Relative to the system file's folder (a board's [system]: the board folder).
    base = (info.context or {}).get("dir")
    path = value if value.is_absolute() or base is None else Path(base) / value
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path.resolve()


class SystemKernel(Strict):
    """What a system needs of the kernel beyond the board's own: the access point's
    wireless stack and radio drivers, which the board's base image does without.

    Args:
        fragments: Kconfig fragments merged after the board's (relative to the system
            file), checked like them.
        cmdline: appended to the board's kernel command line.
    """

    fragments: list[Annotated[Path, AfterValidator(_system_file)]] = []
    cmdline: str = Field(default="", pattern=r"^[^'\x00-\x1f\x7f]*$")


class System(Strict):
    """What the init sets up and runs.

    Args:
        hostname: the system's host name.
        console_shell: a root shell on the serial console (physical access).
        network: the network setup; omit for none.
        services: supervised services, started in dependency order.
        authorized_keys: SSH public keys dropbear accepts for root.
        root_password_hash: root's password as a crypt(3) hash (``mkpasswd -m sha-512``),
            never the password itself; it goes into /etc/shadow, and dropbear is then
            built with password logins (musl's crypt() checks them). None (the default):
            nobody logs in with a password, and dropbear has that code left out.
        overlays: folders copied into the rootfs, in order (named in the file,
            resolved to their folders and attributes at load).
        packages: packages besides the base userland (busybox), by recipe name (e.g.
            "dropbear"); checked against the recipes at load.
        compression: how each initramfs segment is compressed.
        initramfs: "separate" (loaded by U-Boot) or "builtin" (inside the kernel image).
        health: booted from an A/B slot, when the system marks the slot good (with
            fw_setenv: the package libubootenv).
        kernel: kernel fragments and command line the system adds to the board's.
        access_point: the access point it runs (hostapd, the LAN bridge, DHCP); its
            services are added by the loader.
    """

    # One DNS label (RFC 1123): what `hostname` and /etc/hostname take.
    hostname: str = Field(default="embedbuild",
                          pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
    console_shell: bool = True
    network: Network | None = None
    services: list[Service] = []
    authorized_keys: list[SshKey] = []
    root_password_hash: Annotated[str, AfterValidator(_crypt_hash)] | None = None
    overlays: list[Overlay] = []
    packages: list[Package] = []
    compression: Literal["gzip", "xz", "lzma", "zstd", "lz4", "none"] = "gzip"
    initramfs: Literal["separate", "builtin"] = "separate"
    health: Health | None = None
    kernel: SystemKernel | None = None
    access_point: AccessPoint | None = None

    @field_validator("packages")
    @classmethod
    def _unique_packages(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a package is listed twice")
        return v

    @model_validator(mode="after")
    def _builtin_uncompressed(self) -> Self:
        if self.initramfs == "builtin" and self.compression != "none":
            raise ValueError('initramfs = "builtin" needs compression = "none": the kernel '
                             "compresses what it builds in (CONFIG_INITRAMFS_COMPRESSION_*)")
        return self

    @model_validator(mode="after")
    def _mark_good_tool(self) -> Self:
        if self.health is not None and MARK_GOOD_PACKAGE not in self.packages:
            raise ValueError(f"health marks the A/B slot good with fw_setenv: add "
                             f"{MARK_GOOD_PACKAGE!r} to packages")
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
        # The access point's services, which the loader adds: others may depend on them.
        generated = self.access_point.service_names() if self.access_point else []
        if taken := sorted(set(names) & set(generated)):
            raise ValueError(f"service {taken[0]!r} is one the access point adds: name "
                             "yours otherwise")
        names += generated
        for s in self.services:
            for d in s.depends_on:
                if d not in names:
                    raise ValueError(f"service {s.name!r} depends on unknown service {d!r} "
                                     f"(known: {', '.join(names)})")
        service_order(self.services, set(generated))  # refuses cycles
        return self

    @model_validator(mode="after")
    def _access_point_packages(self) -> Self:
        if self.access_point is not None:
            for pkg, why in (("hostapd", "runs the access point"),
                             ("wireless-regdb", "tells the kernel the country's channels and "
                              "power limits")):
                if pkg not in self.packages:
                    raise ValueError(f"access_point needs package {pkg} ({why}): add it to "
                                     "packages")
        return self

    @model_validator(mode="after")
    def _used_packages(self, info: ValidationInfo) -> Self:
        offered = (info.context or {}).get("services", {})
        base = {n for n, kind in (info.context or {}).get("packages", {}).items()
                if kind == "base"}
        for s in self.services:
            if s.use is not None and (pkg := offered[s.use][0]) not in {*self.packages, *base}:
                raise ValueError(f"service {s.name!r} uses the default of package {pkg}, "
                                 f"which packages does not list")
        return self


def service_order(services: list[Service], later: Collection[str] = ()) -> list[Service]:
    """Services sorted so each comes after what it depends on; a cycle is an error naming it.
    ``later``: names of services added afterwards (the access point's), not followed."""
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
            if d not in later:
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
