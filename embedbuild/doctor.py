"""`embedbuild doctor`: what this machine (and, when given, a board's serial line and
network) needs, checked one by one and printed as what is fine and what to fix."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedbuild import compiler_cache
from embedbuild.errors import EmbedbuildError
from embedbuild.model.board import Board
from embedbuild.rig import preflight
from embedbuild.store import Store

# A kernel build with its object tree and the unpacked source takes about this much.
SPACE_NEEDED = 5 * 2**30


@dataclass
class Finding:
    """One check: what was checked, whether it is fine, and what to do if not."""

    what: str
    ok: bool
    detail: str = ""
    fix: str = ""


def _check(what: str, fn: Callable[[], str | None]) -> Finding:
    try:
        return Finding(what, True, fn() or "")
    except EmbedbuildError as e:
        return Finding(what, False, e.message, e.hint or "")


def _tool(name: str, package: str) -> Callable[[], str]:
    def check() -> str:
        path = shutil.which(name)
        if path is None:
            raise EmbedbuildError(f"{name} not found", hint=f"run tools/setup (Debian package "
                                  f"{package})")
        return path
    return check


def _privileges() -> str:
    if os.geteuid() != 0:
        raise EmbedbuildError("not root: TFTP on port 69 and QEMU bench networks need root",
                              hint="run embedbuild as root (sudo .venv/bin/embedbuild ...)")
    return "root"


def _store(store: Store) -> Callable[[], str]:
    def check() -> str:
        root = store.root
        probe = root if root.exists() else next(p for p in root.parents if p.exists())
        if not os.access(probe, os.W_OK):
            raise EmbedbuildError(f"{probe} is not writable",
                                  hint="choose another store with --store or EMBEDBUILD_STORE")
        free = shutil.disk_usage(probe).free
        if free < SPACE_NEEDED:
            raise EmbedbuildError(f"{free / 2**30:.1f} GiB free at {probe}",
                                  hint=f"a kernel build needs about {SPACE_NEEDED / 2**30:.0f} "
                                  "GiB: free space or run `embedbuild gc`")
        return f"{root}, {free / 2**30:.0f} GiB free"
    return check


def _ccache() -> str:
    if os.environ.get("EMBEDBUILD_NO_CCACHE", "") not in ("", "0"):
        return "off (EMBEDBUILD_NO_CCACHE)"
    cache = compiler_cache.configured()
    if cache is None:
        raise EmbedbuildError("ccache not found: builds compile without a compiler cache",
                              hint="run tools/setup (Debian package ccache)")
    remote = cache.setting("remote_storage")
    remote = f", remote storage {remote}" if remote else ""
    return f"{cache.ccache}, cache {cache.dir}{remote}"


def _file(path: Path, fix: str) -> Callable[[], str]:
    def check() -> str:
        if not path.is_file():
            raise EmbedbuildError(f"{path} not found", hint=fix)
        return str(path)
    return check


def findings(store: Store, board: Board | None = None, serial: str | None = None,
             server_ip: str | None = None, device_ip: str | None = None) -> list[Finding]:
    """Every check, in the order a person would fix them."""
    out = [_check("privileges", _privileges), _check("store", _store(store))]
    for tool, pkg in (("make", "make"), ("gcc", "gcc"), ("mkimage", "u-boot-tools"),
                      ("dtc", "device-tree-compiler"), ("cpio", "cpio"), ("xz", "xz-utils"),
                      ("ip", "iproute2")):
        out.append(_check(tool, _tool(tool, pkg)))
    out.append(_check("compiler cache", _ccache))
    if board is not None:
        out.append(_check(f"{board.cross_compile}gcc",
                          _tool(f"{board.cross_compile}gcc", f"gcc-{board.cross_compile[:-1]}")))
        src = board.kernel_source
        if src.file is not None:
            out.append(_check("kernel source", _file(src.file, "run tools/setup (it installs "
                                                               "linux-source-6.1)")))
        if board.qemu is not None:
            out.append(_check(board.qemu.system, _tool(board.qemu.system, "qemu-system-*")))
            if board.qemu.firmware is not None:
                out.append(_check("QEMU firmware", _file(board.qemu.firmware,
                                                         "run tools/setup (u-boot-qemu)")))
    if serial is not None:
        out.append(_check(f"serial {serial}", lambda: preflight.check_serial(serial)))
    if server_ip and device_ip:
        out.append(_check(f"network {server_ip} -> {device_ip}",
                          lambda: preflight.check_addresses(server_ip, device_ip).name))
        if out[-1].ok:  # a port on an address this machine lacks says nothing
            out.append(_check(f"TFTP port {server_ip}:69",
                              lambda: preflight.check_port(server_ip)))
    elif serial is not None:
        out.append(Finding("network", False, "no addresses given",
                           "add --server-ip (this machine) and --device-ip (the board)"))
    return out
