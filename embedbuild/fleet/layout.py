"""The TFTP tree a fleet is served from, and how it changes without a device ever
booting half of one build and half of another, or another device's build:

```
ROOT/pxelinux.cfg/01-52-54-00-12-34-01   a device's configuration: names one build folder
ROOT/pxelinux.cfg/default                 what unknown devices boot (absent: they get nothing)
ROOT/builds/KEY/zImage, initramfs...      one build, named by its result's store key
```

A build folder is filled under a temporary name and renamed into place whole, and never
changes after (the same key is the same files). A device's configuration is written to a
temporary file and renamed over the old one, so `pxe get` reads either the old or the new
file, each naming a complete folder. A folder no configuration names any more is kept for
``keep`` seconds (a device that read the old configuration a moment ago still loads from
it), then removed; a transfer already under way keeps its open file to the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

from embedbuild.pxe import CONFIG_DIR, DEFAULT_CONFIG, PxeEntry, config_name

BUILDS = "builds"
KEEP = 600.0  # seconds an unreferenced build folder stays servable
_NAMED = re.compile(rf"^\s*(?:kernel|initrd|fdt)\s+{BUILDS}/([0-9a-f]+)/", re.M)


def build_key(result: Path) -> str:
    """A result's store key (its item is named KEY-BOARD-result)."""
    return result.resolve().name.split("-", 1)[0]


class FleetTree:
    """The served folder.

    Args:
        root: the folder the TFTP server serves (made if missing).
        keep: seconds a build folder no configuration names stays servable.
    """

    def __init__(self, root: Path, keep: float = KEEP) -> None:
        self.root = root
        self.keep = keep
        self.configs = root / CONFIG_DIR
        self.builds = root / BUILDS
        self._retired: dict[str, float] = {}
        for folder in (self.root, self.configs, self.builds):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        # What a killed server left half-made is never named by a configuration.
        for leftover in [*self.builds.glob(".new-*"), *self.configs.glob(".*.tmp")]:
            _remove(leftover)

    def publish(self, result: Path, names: list[str]) -> str:
        """The result's files ``names`` in their build folder (made whole, or there
        already); returns the folder relative to the root."""
        key = build_key(result)
        dest = self.builds / key
        self._retired.pop(key, None)
        if not dest.is_dir():
            tmp = self.builds / f".new-{key}-{os.getpid()}"
            _remove(tmp)
            tmp.mkdir(mode=0o755)
            for name in names:
                _copy(result / name, tmp / name)
            tmp.chmod(0o755)
            os.rename(tmp, dest)
        return f"{BUILDS}/{key}"

    def write(self, mac: str | None, entry: PxeEntry) -> bool:
        """Make ``entry`` the configuration of the device with this MAC (None: the
        default); False when it was that already."""
        path = self.root / config_name(mac)
        text = entry.render()
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                return False
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o444)
        os.replace(tmp, path)
        return True

    def remove(self, mac: str | None) -> bool:
        """Serve nothing for this MAC (None: no default); False if nothing was served."""
        try:
            (self.root / config_name(mac)).unlink()
            return True
        except FileNotFoundError:
            return False

    def served(self) -> dict[str | None, str]:
        """The configuration files there: MAC (None: default) -> text."""
        out: dict[str | None, str] = {}
        for path in self.configs.iterdir():
            if path.name == DEFAULT_CONFIG:
                out[None] = path.read_text()
            elif path.name.startswith("01-") and path.is_file():
                out[path.name[3:].replace("-", ":")] = path.read_text()
        return out

    def prune(self, now: float | None = None) -> list[str]:
        """Remove build folders no configuration has named for ``keep`` seconds; returns
        their keys."""
        now = time.monotonic() if now is None else now
        named = {key for text in self.served().values() for key in _NAMED.findall(text)}
        removed = []
        for folder in self.builds.iterdir():
            key = folder.name
            if key.startswith(".") or key in named:
                self._retired.pop(key, None)
                continue
            since = self._retired.setdefault(key, now)
            if now - since >= self.keep:
                _remove(folder)
                del self._retired[key]
                removed.append(key)
        return removed


def _copy(src: Path, dest: Path) -> None:
    """A copy of a store file (not a hard link: nothing done to the served tree can reach
    the store), world-readable, as the TFTP server serves only such files."""
    shutil.copyfile(src, dest)
    dest.chmod(0o444)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
