"""The fleet server: builds what the inventory needs, lays it out in the TFTP tree
(layout.py), keeps it in step with the inventory, and says what happens.

The TFTP server (rig/tftp.py) serves the tree's root from a thread of its own the whole
time: a reload (the inventory changed, or SIGHUP) builds and swaps files beside it, so
no transfer under way is dropped. A build that fails leaves the devices that boot it on
their previous files; an inventory that does not load leaves everything as it was.

    tree = FleetTree(root)
    fleet = FleetServer(inventory, tree, store_builder(store_root, root / "results"), print)
    with TftpServer(tree.root, "10.77.0.1", 69, on_transfer=fleet.on_transfer):
        fleet.run(stop, wake)            # until stop is set; wake: reload now
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.fleet.inventory import BUILD_ARG, DEVICE_ARG, Boot, Inventory, load_inventory
from embedbuild.fleet.layout import FleetTree
from embedbuild.manifest import Manifest
from embedbuild.model.board import Board
from embedbuild.pxe import CONFIG_DIR, mac_of_config, result_entry
from embedbuild.rig.dhcp import DhcpServer, FixedAddress
from embedbuild.rig.tftp import Transfer

# Builds a (board, system file) and returns the loaded board and its result folder.
Builder = Callable[[str, Path | None], tuple[Board, Path]]
Say = Callable[[str], None]


def store_builder(store: Path, links: Path) -> Builder:
    """Builds into the store at ``store`` with `embedbuild build`, in a process of its own:
    a build is Python work for seconds (loading, planning, hashing) and would hold the
    interpreter's lock that the TFTP server's thread needs to answer devices on time. Each
    result gets a link in ``links`` (a gc root: `embedbuild gc` keeps what is served)."""

    def build(board: str, system: Path | None) -> tuple[Board, Path]:
        from embedbuild.load import load_board

        loaded = load_board(board, system)  # refusals here, as any load
        name = hashlib.sha256(f"{board}\0{system or ''}".encode()).hexdigest()[:16]
        links.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "embedbuild.cli", "--store", str(store), "build", board,
                "--out-link", str(links / f"{loaded.name}-{name}"),
                *(["--system", str(system)] if system else [])]
        p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           env={**os.environ, "COLUMNS": "200"})
        if p.returncode != 0:
            errors = [line.removeprefix("error: ") for line in p.stderr.splitlines()
                      if line.startswith("error: ")]
            raise EmbedbuildError(errors[0] if errors else
                                  f"embedbuild build exited with status {p.returncode}: "
                                  f"{p.stderr.strip()[-300:]}")
        return loaded, Path(p.stdout.strip().splitlines()[-1])

    return build


def _what(build: tuple[str, Path | None]) -> str:
    board, system = build
    return f"{board}" + (f" with {system}" if system else "")


class FleetServer:
    """Keeps the TFTP tree in step with the inventory.

    Args:
        inventory: the inventory file.
        tree: the served tree.
        build: makes a (board, system)'s result (store_builder, or a test's own).
        say: where each line of what happens goes (the command prints it).
        dhcp: the DHCP server, told the devices' fixed addresses (None: none runs).
    """

    def __init__(self, inventory: Path, tree: FleetTree, build: Builder, say: Say,
                 dhcp: DhcpServer | None = None) -> None:
        self.path = inventory
        self.tree = tree
        self.build = build
        self.say = say
        self.dhcp = dhcp
        self.inventory: Inventory | None = None
        self._stamps: dict[Path, tuple | None] = {}
        # Builds made since the last full reload, by (board, system, the system file's
        # stamp): an inventory edit rebuilds only what it changed; SIGHUP rebuilds all.
        self._built: dict[tuple, tuple[Board, Path]] = {}
        self._macs: dict[str, str] = {}  # client address -> the MAC it asked with

    # -- keeping in step --------------------------------------------------------------

    def load(self) -> Inventory:
        """Read the inventory (errors raised: at start nothing is served without one) and
        watch it and its system files from now on."""
        # Stamped before reading: a change while it is read is seen at the next look.
        self._stamps = {self.path: _stamp(self.path)}
        inv = load_inventory(self.path)
        self._watch(inv)
        return inv

    def _watch(self, inv: Inventory) -> None:
        self._stamps = {p: self._stamps.get(p) or _stamp(p) for p in inv.watched()}

    def changed(self) -> bool:
        """Whether a watched file (the inventory, its system files) changed."""
        return any(_stamp(p) != s for p, s in self._stamps.items())

    def reload(self, inv: Inventory | None = None, rebuild: bool = True) -> None:
        """Read the inventory again (or take ``inv``), build what it needs (``rebuild``:
        everything; else what is new or whose system file changed: a change inside a
        board's folder needs a full one) and swap each device's files; an inventory that
        does not load changes nothing."""
        if rebuild:
            self._built.clear()
        if inv is None:
            try:
                inv = self.load()
            except EmbedbuildError as e:
                self.say(f"inventory not reloaded, still serving the previous one: {e}"
                         + (f" ({e.hint})" if e.hint else ""))
                return
        elif not self._stamps:  # read by the caller: watched from now on
            self._watch(inv)
        built = self._build_all(inv)
        served = self.tree.served()
        for d in inv.device:
            self._point(d.mac, d, built.get(d.build), d.name, served)
        for mac in served:
            if mac is not None and mac not in inv.by_mac():
                self.tree.remove(mac)
                self.say(f"{mac}: no longer in the inventory: "
                         + ("it boots the [unknown] build" if inv.unknown else "refused"))
        if inv.unknown is not None:
            self._point(None, inv.unknown, built.get(inv.unknown.build), "unknown devices",
                        served)
        elif self.tree.remove(None):
            self.say("unknown devices: refused (the inventory has no [unknown])")
        if self.dhcp is not None:
            self.dhcp.update([FixedAddress(d.mac, d.ip, d.name) for d in inv.device if d.ip])
        self.inventory = inv
        for key in self.tree.prune():
            self.say(f"removed builds/{key}: no device has booted from it for "
                     f"{self.tree.keep:.0f} s")

    def _build_all(self, inv: Inventory) -> dict[tuple, tuple[Board, Manifest, str]]:
        """Each distinct (board, system) built and its files published; a failure is
        said and left out."""
        out = {}
        for build in inv.builds():
            known = (*build, _stamp(build[1]) if build[1] else None)
            t0 = time.monotonic()
            try:
                if known not in self._built:
                    self._built[known] = self.build(*build)
                board, result = self._built[known]
                manifest = Manifest.read(result)
                names = [manifest.kernel.file, *manifest.with_role("initramfs"),
                         *manifest.with_role("dtb"), "manifest.json"]
                # Published again each time: a folder removed as unused comes back whole.
                folder = self.tree.publish(result, names)
            except (EmbedbuildError, OSError) as e:
                self.say(f"build of {_what(build)} failed: {e}; devices that boot it keep "
                         "their previous files")
                continue
            out[build] = (board, manifest, folder)
            if time.monotonic() - t0 > 1:
                self.say(f"built {_what(build)} in {time.monotonic() - t0:.1f} s")
        return out

    def _point(self, mac: str | None, boot: Boot, built: tuple | None, name: str,
               served: dict) -> None:
        """Make the device's configuration name its build (only when that build exists)."""
        if built is None:
            self.say(f"{name}: " + ("keeps its previous files" if mac in served else
                                    "nothing to serve until its build succeeds"))
            return
        board, manifest, folder = built
        own = [] if mac is None else [f"{DEVICE_ARG}={name}"]
        append = " ".join([*boot.append.split(), *own, f"{BUILD_ARG}={folder.split('/')[-1]}"])
        entry = result_entry(board, manifest, folder, append,
                             comment=f"{name} {mac or ''}: {_what(boot.build)}, {folder}")
        if self.tree.write(mac, entry):
            self.say(f"{name}{f' ({mac})' if mac else ''}: boots {folder} "
                     f"({_what(boot.build)})")

    def run(self, stop: threading.Event, wake: threading.Event, poll: float = 0.5) -> None:
        """Reload whenever a watched file changes (building what changed) or ``wake`` is
        set (SIGHUP: building everything again), until ``stop``."""
        while not stop.is_set():
            woken = wake.wait(poll)
            if woken:  # cleared only when seen: one that comes during a reload is kept
                wake.clear()
                self.say("woken (SIGHUP): re-reading the inventory, building everything")
            if (woken or self.changed()) and not stop.is_set():
                self.reload(rebuild=woken)
            for key in self.tree.prune():
                self.say(f"removed builds/{key}: no device has booted from it for "
                         f"{self.tree.keep:.0f} s")

    # -- what the TFTP server saw ------------------------------------------------------

    def on_transfer(self, t: Transfer) -> None:
        """One line per transfer, and per device that asked for a configuration it has
        none of (called from the TFTP server's thread)."""
        ip = t.client[0]
        mac = mac_of_config(t.filename)
        if mac is not None:
            self._macs[ip] = mac
        inv = self.inventory
        known = inv.by_mac() if inv is not None else {}
        asked = self._macs.get(ip)
        who = f"{known[asked].name} ({ip})" if asked in known else \
            f"{asked} ({ip})" if asked else ip
        if t.ok:
            self.say(f"{who}: sent {t.filename}, {t.size:,} bytes in {t.seconds:.2f} s")
        elif mac is not None and mac in known:
            self.say(f"{who}: no configuration yet (its build has not succeeded): refused")
        elif mac is not None and inv is not None and inv.unknown is None:
            self.say(f"unknown device {mac} at {ip}: refused (the inventory has no "
                     "[unknown])")
        elif not t.filename.startswith(f"{CONFIG_DIR}/"):  # not pxe get's other guesses
            self.say(f"{who}: {t.filename!r} refused: {t.error}")


def _stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
