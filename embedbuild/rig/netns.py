"""A private bench LAN: a network namespace with a bridge and a tap for a QEMU board.

Only addresses inside a namespace this module created are used, and the
namespace (with its bridge and tap) is removed on exit, also after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.resource import DEFAULT_LINK, LanLink

CLONE_NEWNET = 0x40000000
_serial = itertools.count()  # one process may run several benches at once
_libc = ctypes.CDLL(None, use_errno=True)


def require_root(what: str) -> None:
    """Refuse early, with what to do, instead of failing half-way."""
    if os.geteuid() != 0:
        raise EmbedbuildError(
            f"{what} needs root: it creates a network namespace with a bridge and a tap",
            hint="run it as root (e.g. sudo .venv/bin/embedbuild ...)",
        )


@contextlib.contextmanager
def inside(ns_path: str | None) -> Iterator[None]:
    """Run the body with this thread in the network namespace (sockets made here stay in it)."""
    if ns_path is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(ns_path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
        try:
            yield
        finally:
            _libc.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back during the body (cleanup that must finish), then
    deliver them to their own handlers.

    Only the main thread can change handlers; elsewhere the body runs as is (Python
    raises KeyboardInterrupt in the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in saved.items():
        if handler is not None:  # None: a handler set outside Python; leave it
            signal.signal(s, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)


def _remove_stale() -> None:
    """Remove namespaces of embedbuild processes that died without cleaning up (SIGKILL)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        pid = name.removeprefix("embedbuild-").split("-")[0]
        if name.startswith("embedbuild-") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if p.returncode:
        raise EmbedbuildError(f"ip {' '.join(args)} failed: {p.stderr.strip()}")


@dataclass
class BenchNetwork:
    """Namespace ``name`` with bridge br0 at the link's server address and tap0 (up to
    tap<taps-1>) enslaved to it: one LAN, for one board or several.

    Args:
        link: this machine's (the bridge's) and the board's address on the network.
        taps: how many boards the LAN takes (each QEMU model joins at a tap of its own:
            ``port(n)``).
    """

    link: LanLink = DEFAULT_LINK
    name: str = ""
    tap: str = "tap0"
    taps: int = 1

    def port(self, n: int) -> BenchNetwork:
        """The same LAN as seen by the board at tap ``n``: its QEMU joins there. The view
        owns nothing (only the network that was entered removes the namespace)."""
        if not 0 <= n < self.taps:
            raise EmbedbuildError(f"the bench LAN has {self.taps} tap(s), not a tap{n}")
        return BenchNetwork(self.link, self.name, f"tap{n}", self.taps)

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def exec_argv(self, argv: list[str]) -> list[str]:
        """argv run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def __enter__(self) -> BenchNetwork:
        require_root("a QEMU bench network")
        _remove_stale()
        self.name = self.name or f"embedbuild-{os.getpid()}-{next(_serial)}"
        try:
            _ip("netns", "add", self.name)
            n = ["-n", self.name]
            _ip(*n, "link", "set", "lo", "up")
            _ip(*n, "link", "add", "br0", "type", "bridge")
            for tap in [f"tap{i}" for i in range(self.taps)] if self.taps > 1 else [self.tap]:
                _ip(*n, "tuntap", "add", "dev", tap, "mode", "tap")
                _ip(*n, "link", "set", tap, "master", "br0")
                _ip(*n, "link", "set", tap, "up")
            _ip(*n, "addr", "add", str(self.link.server), "dev", "br0")
            _ip(*n, "link", "set", "br0", "up")
        except BaseException:
            # Also when interrupted half-way: `netns add` may have run already.
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        with uninterrupted():
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
