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
    """One check: what was checked, whether it is fine, and what to do if not. A
    ``note`` is fine for building and booting but worth knowing (with what it costs)."""

    what: str
    ok: bool
    detail: str = ""
    fix: str = ""
    note: bool = False


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


def _sources(board: Board) -> list[Finding]:
    """Each locked file the board's build reads: fetched already, or fetched by the first
    build (a note: the network is needed once)."""
    from embedbuild.sources import needed
    from embedbuild.steps.source import downloaded

    out = []
    for name, src in needed(board).items():
        if downloaded(src).is_file() or (src.file is not None and src.file.is_file()):
            out.append(Finding(f"source {name}", True, f"{src.describe()}, fetched"))
        else:
            out.append(Finding(f"source {name}", True, f"{src.describe()} not fetched yet",
                               f"the first build fetches it; `embedbuild sources fetch "
                               f"{board.name}` does it now, so builds then work offline",
                               note=True))
    return out


def _signing(board: Board) -> list[Finding]:
    """A board with [signing]: the public keys planning reads, the private keys the
    signing step reads (without them a build can still substitute the signed image)."""
    from embedbuild.vboot.keys import default_keydir, signing_keys

    assert board.signing is not None
    signing, folder = board.signing, default_keydir()

    def public() -> str:
        signing_keys(signing.keys, keydir=folder)
        return f"{', '.join(signing.keys)} in {folder}"

    found = _check("signing keys", public)
    if not found.ok:
        return [found]
    missing = [n for n in signing.signers if not (folder / f"{n}.key").is_file()]
    if not missing:
        return [found]
    return [found, Finding("private keys", True, f"no {', '.join(f'{n}.key' for n in missing)}"
                           f" in {folder}: this machine can verify, not sign", note=True,
                           fix="sign where the keys are (EMBEDBUILD_KEYS), or substitute the "
                           "signed image from a binary cache")]


def _toolchain(board: Board) -> Finding:
    """The installed toolchain against the lock's: a drift costs other store keys."""
    from embedbuild.plan import plan_board
    from embedbuild.toolchain import Toolchain

    what = f"toolchain {board.cross_compile.rstrip('-')} against the lock"
    if not board.locked_toolchain:
        return Finding(what, True, "the lock records no toolchain for it", note=True,
                       fix="`embedbuild sources update` records it")
    drift = Toolchain(board.cross_compile, board.arch).drift(board.locked_toolchain)
    if not drift:
        return Finding(what, True, "the installed packages are the locked versions")
    steps = sum(1 for s in plan_board(board).result.walk() if "toolchain" in s.inputs)
    pins = " ".join(f"{d.split()[0]}={d.rsplit('lock: ', 1)[1].rstrip(')')}" for d in drift
                    if "not in it" not in d)
    return Finding(what, True, "installed differs: " + "; ".join(drift) + f". Cost: the {steps} "
                   f"compile steps of {board.name} get other store keys than on a machine on "
                   "the lock, so a binary cache filled there gives no hits here, and outputs "
                   "may differ from theirs", note=True,
                   fix=f"apt-get install {pins}" if pins else "`embedbuild sources update` "
                   "records the installed toolchain")


def findings(store: Store, board: Board | None = None, serial: str | None = None,
             server_ip: str | None = None, device_ip: str | None = None) -> list[Finding]:
    """Every check, in the order a person would fix them."""
    out = [_check("privileges", _privileges), _check("store", _store(store))]
    for tool, pkg in (("make", "make"), ("gcc", "gcc"), ("mkimage", "u-boot-tools"),
                      ("dtc", "device-tree-compiler"), ("cpio", "cpio"), ("xz", "xz-utils"),
                      ("lz4", "lz4"), ("ip", "iproute2")):
        out.append(_check(tool, _tool(tool, pkg)))
    out.append(_check("compiler cache", _ccache))
    if board is not None:
        out.append(_check(f"{board.cross_compile}gcc",
                          _tool(f"{board.cross_compile}gcc", f"gcc-{board.cross_compile[:-1]}")))
        signing = _signing(board) if board.signing is not None else []
        out += signing
        if all(f.ok for f in signing):  # planning (the sources) reads the public keys
            out.append(_toolchain(board))
            out += _sources(board)
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
