"""The inventory: which device (by MAC address) boots which build, with which kernel
arguments. A TOML file, validated once here; errors name the file, the line and the key.

```toml
[unknown]                          # optional: what a device that is not listed boots;
board = "qemu-arm-virt"            # without it, unknown devices get no configuration
append = "loglevel=4"

[[device]]
name = "dev01"                     # one DNS label; the kernel gets embedbuild.device=dev01
                                   # and embedbuild.build=KEY (the build it boots)
mac = "52:54:00:12:34:01"          # the address its U-Boot asks with
board = "qemu-arm-virt"            # a board name (or folder), as for `embedbuild build`
system = "systems/kiosk.toml"      # optional: a system file (relative to this file)
append = "quiet"                   # optional: kernel arguments after the board's
ip = "10.77.0.11"                  # optional: its address from `serve --dhcp-interface`
```
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embedbuild.errors import BoardError, EmbedbuildError
from embedbuild.load import BOARD_NAME, key_line, read_toml
from embedbuild.pxe import MacAddress

# What serve puts on a device's kernel command line: its name, and the build it boots
# (the result's store key), so that a running device can say both.
DEVICE_ARG = "embedbuild.device"
BUILD_ARG = "embedbuild.build"
DEVICE_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# pxelinux's append line is one line; Linux on ARM takes 1024 bytes of command line,
# of which the board's own and embedbuild's arguments need some.
MAX_APPEND = 512

KernelArgs = Annotated[str, Field(max_length=MAX_APPEND, pattern=r"^[^\x00-\x1f\x7f]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Boot(_Strict):
    """What a device boots.

    Args:
        board: a board name or folder.
        system: a system file replacing the board's [system] (relative to the inventory).
        append: kernel arguments after the board's command line.
    """

    board: str = Field(pattern=f"^(?:{BOARD_NAME}|.*/.*)$")
    system: Path | None = None
    append: KernelArgs = ""

    @field_validator("append")
    @classmethod
    def _own_name(cls, v: str) -> str:
        for word in v.split():
            if word.split("=", 1)[0] in (DEVICE_ARG, BUILD_ARG):
                raise ValueError(f"{word.split('=', 1)[0]} is set by serve: the device's "
                                 "name and the build it boots")
        return v

    @property
    def build(self) -> tuple[str, Path | None]:
        """What is built for it: (board, system file)."""
        return self.board, self.system


class Device(Boot):
    """A device of the fleet.

    Args:
        name: its name (one DNS label), given to its kernel as embedbuild.device=NAME.
        mac: the MAC address its U-Boot asks with.
        ip: its address from serve's DHCP server (None: one from the range).
    """

    name: str = Field(pattern=DEVICE_NAME)
    mac: MacAddress
    ip: ipaddress.IPv4Address | None = None


class Inventory(_Strict):
    """The inventory file.

    Args:
        device: the devices ([[device]] tables).
        unknown: what a device that is not listed boots (None: it gets nothing).
        path: the file it was read from.
    """

    device: list[Device] = []
    unknown: Boot | None = None
    path: Path

    def by_mac(self) -> dict[str, Device]:
        """The devices by MAC address."""
        return {d.mac: d for d in self.device}

    def builds(self) -> list[tuple[str, Path | None]]:
        """Every distinct (board, system file) the inventory boots, in order."""
        boots: list[Boot] = [*self.device, *([self.unknown] if self.unknown else [])]
        return list(dict.fromkeys(b.build for b in boots))

    def watched(self) -> list[Path]:
        """The files whose change changes what is served: this one and its systems."""
        return [self.path, *dict.fromkeys(s for _, s in self.builds() if s is not None)]


def _where(path: Path, text: str, *loc: str | int) -> str:
    line = key_line(text, loc)
    return f"{path}:{line}" if line else str(path)


def _key(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")


def _format(e: ValidationError, path: Path, text: str) -> EmbedbuildError:
    problems = []
    for err in e.errors():
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (the inventory's keys are in embedbuild/fleet/inventory.py " \
                  "and README.md)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "string_pattern_mismatch":
            msg = f"{err['input']!r} is not allowed here (it must match {err['ctx']['pattern']})"
        problems.append((loc, msg))
    return _problems(path, text, problems)


def _problems(path: Path, text: str, problems: list[tuple[tuple, str]]) -> EmbedbuildError:
    lines = [f"{_where(path, text, *loc)}: {_key(loc) or '(top)'}: {msg}"
             for loc, msg in problems]
    if len(lines) == 1:
        where, rest = lines[0].split(": ", 1)
        return BoardError(rest, where=where, hint="fix the inventory at that line")
    return BoardError(f"{len(lines)} problems:\n  " + "\n  ".join(lines), where=str(path),
                      hint="fix the inventory at those lines")


def _duplicates(inv: Inventory) -> list[tuple[tuple, str]]:
    problems = []
    for key in ("name", "mac", "ip"):
        first: dict[Any, int] = {}
        for i, d in enumerate(inv.device):
            value = getattr(d, key)
            if value is None:
                continue
            if value in first:
                problems.append((("device", i, key), f"{value} is device[{first[value]}]'s "
                                 f"{key} already: each device has its own"))
            first.setdefault(value, i)
    return problems


def _systems(data: dict[str, Any], folder: Path) -> None:
    """System files named relative to the inventory, made absolute before validation."""
    tables = [*(d for d in data.get("device", []) if isinstance(d, dict)),
              *([data["unknown"]] if isinstance(data.get("unknown"), dict) else [])]
    for t in tables:
        if isinstance(t.get("system"), str) and t["system"]:
            t["system"] = str(folder / t["system"])


def load_inventory(path: Path, check_boards: bool = True) -> Inventory:
    """Read and check an inventory: its keys and values, each name, MAC and address used
    once, every system file there, and (``check_boards``) every board and system loading
    as a build would."""
    data, text = read_toml(path)
    if not isinstance(data.get("device", []), list):
        raise _problems(path, text, [(("device",), "devices are [[device]] tables")])
    if "path" in data:  # the file's own path, not a key of it
        raise _problems(path, text, [(("path",), "unknown key")])
    _systems(data, path.parent.resolve())
    try:
        inv = Inventory.model_validate({**data, "path": path})
    except ValidationError as e:
        raise _format(e, path, text) from None
    problems = _duplicates(inv)
    boots = [(("device", i), d) for i, d in enumerate(inv.device)]
    if inv.unknown is not None:
        boots.append((("unknown",), inv.unknown))
    for loc, b in boots:
        if b.system is not None and not b.system.is_file():
            problems.append(((*loc, "system"), f"system file not found: {b.system}"))
    if problems:
        raise _problems(path, text, problems)
    if check_boards:
        _check_builds(path, text, boots)
    return inv


def _check_builds(path: Path, text: str, boots: list) -> None:
    """Each (board, system) loads: an unknown board is an error at the inventory's line;
    an error inside a board or system file names that file."""
    from embedbuild.load import load_board

    checked: set[tuple[str, Path | None]] = set()
    for loc, b in boots:
        if b.build in checked:
            continue
        checked.add(b.build)
        try:
            load_board(b.board, b.system)
        except BoardError as e:
            if e.where is None:  # the board itself was not found: say where it is named
                raise BoardError(e.message, where=_where(path, text, *loc, "board"),
                                 hint=e.hint) from None
            raise
