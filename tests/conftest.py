"""Shared fixtures: a session store holding one real build of qemu-arm-virt, and a CLI runner."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from embedbuild.manifest import Manifest

ROOT = Path(__file__).resolve().parent.parent
EMBEDBUILD = str(Path(sys.executable).parent / "embedbuild")
# Every board of the project, for the tests that cover each one.
BOARDS = sorted(d.name for d in (ROOT / "boards").iterdir() if (d / "board.toml").is_file())


# The line a planning command prints on a machine whose installed toolchain differs
# from the lock (embedbuild/session.py): a fact of the machine the suite runs on (a newer
# Debian cross gcc), not of the test.
TOOLCHAIN_DRIFT = "warning: the installed toolchain differs from the lock"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def own_err(self) -> str:
        """stderr without the machine's toolchain-drift line: what a test that counts the
        lines a command printed (one error, no warning) looks at."""
        return "".join(line for line in self.err.splitlines(keepends=True)
                       if not line.startswith(TOOLCHAIN_DRIFT))


def cli(
    *args: str, store: Path, cwd: Path | None = None, env: dict | None = None, timeout: float = 3600
) -> Run:
    """Run the installed embedbuild command like a user does."""
    full_env = {**os.environ, "EMBEDBUILD_STORE": str(store), "COLUMNS": "200", **(env or {})}
    p = subprocess.run(
        [EMBEDBUILD, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    return Run(p.returncode, p.stdout, p.stderr)


def run_main(*args: str, store: Path, env: dict | None = None, cwd: Path | None = None) -> Run:
    """embedbuild's main() in this process: the very code cli() runs, without another
    interpreter's start-up (a third of a second each). For commands refused before they
    run anything (load and argument errors); each test file keeps a real cli() for the
    exit status and the absence of a traceback in a process of its own. Also for quick
    commands a test only sets up with (a cache push, a key pair)."""
    import contextlib
    import io
    import signal

    from embedbuild.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    os.environ.update({"EMBEDBUILD_STORE": str(store), "COLUMNS": "200", **(env or {})})
    out, err = io.StringIO(), io.StringIO()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return Run(code, out.getvalue(), err.getvalue())


def snapshot(store: Path) -> dict[str, float]:
    """Every path in a store with its mtime: to show a failed build left it untouched."""
    if not store.exists():
        return {}
    return {
        str(p.relative_to(store)): p.lstat().st_mtime
        for p in store.rglob("*")
        if ".locks" not in p.parts and ".logs" not in p.parts
    }


def unverified_downloads(downloads: Path) -> list[str]:
    """Files in a downloads cache that are not a verified download (``SHA256/NAME`` whose
    bytes have that sha256): what a failed or cancelled fetch must never leave. apt's own
    state (``.apt``) is not a download. Other sources a build fetched beside the failed one
    may be kept, whole and verified: which of them finished before the failure stopped the
    build depends on the machine's speed."""
    from embedbuild.store import hash_file

    if not downloads.exists():
        return []
    bad = []
    for p in downloads.rglob("*"):
        rel = p.relative_to(downloads)
        if p.is_file() and ".apt" not in rel.parts \
                and (len(rel.parts) != 2 or hash_file(p) != p.parent.name):
            bad.append(str(rel))
    return bad


@pytest.fixture
def boards(tmp_path: Path) -> Path:
    """A private copy of the project's boards/ to break on purpose."""
    dst = tmp_path / "boards"
    shutil.copytree(ROOT / "boards", dst)
    return dst


@pytest.fixture(scope="session", autouse=True)
def session_ccache(tmp_path_factory, pytestconfig) -> Iterator[Path | None]:
    """Compiles go through a ccache of this session's own, empty at the start: CI never
    depends on what an earlier run cached, and no team remote storage is asked.

    Not when a store is reused (EMBEDBUILD_TEST_STORE, or --eb-store from `embedbuild
    test`): its items were compiled through the user's own ccache, which stays in use.
    """
    if os.environ.get("EMBEDBUILD_TEST_STORE") or pytestconfig.getoption("--eb-store"):
        yield None
        return
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("CCACHE_") or name in ("EMBEDBUILD_CCACHE_REMOTE",
                                                  "EMBEDBUILD_NO_CCACHE"):
            del os.environ[name]
    path = tmp_path_factory.mktemp("ccache")
    os.environ["EMBEDBUILD_CCACHE_DIR"] = str(path)
    yield path
    os.environ.clear()
    os.environ.update(saved)


# The key qemu-arm-vboot's [signing] names, made for each test session (never committed).
VBOOT_KEY = "embedbuild-dev"


@pytest.fixture(scope="session", autouse=True)
def session_keys(tmp_path_factory) -> Iterator[Path]:
    """A key folder of this session's own ($EMBEDBUILD_KEYS) holding a throwaway
    embedbuild-dev key: every build of a signed board in the tests (qemu-arm-vboot) signs
    with it, and no one's real keys are ever read or used."""
    from embedbuild.vboot.keys import new_key

    folder = tmp_path_factory.mktemp("keys") / "keys"
    new_key(folder, VBOOT_KEY)
    saved = os.environ.get("EMBEDBUILD_KEYS")
    os.environ["EMBEDBUILD_KEYS"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("EMBEDBUILD_KEYS", None)
    else:
        os.environ["EMBEDBUILD_KEYS"] = saved


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def board_line() -> Iterator[tuple[int, str]]:
    """A pty pair standing in for a serial line: (the board's end, the device path that
    embedbuild, or a serial server such as ser2net, opens)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    yield master, path
    os.close(master)


@pytest.fixture(scope="session")
def session_store(tmp_path_factory) -> Path:
    """One store for the whole session: the real build happens once.

    EMBEDBUILD_TEST_STORE reuses a store across runs while developing; CI never sets it.
    """
    if env := os.environ.get("EMBEDBUILD_TEST_STORE"):
        return Path(env)
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def eb_store(session_store: Path, pytestconfig) -> Path:
    """The plugin's `target` builds in the session store too (unless --eb-store is given)."""
    opt = pytestconfig.getoption("--eb-store")
    return Path(opt) if opt else session_store


@pytest.fixture(scope="session")
def arm_result(session_store: Path, tmp_path_factory) -> Path:
    """qemu-arm-virt built for real into the session store; returns the result folder."""
    out = tmp_path_factory.mktemp("out")
    r = cli("build", "qemu-arm-virt", "--out-link", str(out / "result"), store=session_store)
    assert r.code == 0, r.err
    return (out / "result").resolve()


def manifest(result: Path) -> Manifest:
    return Manifest.read(result)


def step_log(store: Path, board: str, role: str) -> str:
    """The build log the store keeps for the step of ``role`` of a board's plan."""
    from embedbuild.load import load_board
    from embedbuild.plan import plan_board
    from embedbuild.store import Store

    step = plan_board(load_board(board)).steps[role]
    s = Store(store)
    return (s.meta_path(s.item_path(step.key, step.name)) / "build.log").read_text()


def ccache_counts(log: str) -> dict[str, int] | None:
    """The compiler cache's summary line of a step log as numbers; None: no ccache."""
    import re

    m = re.search(r"^ccache: (\d+) hits.*?, (\d+) of them remote, (\d+) misses, "
                  r"(\d+) uncacheable$", log, re.M)
    if m is None:
        return None
    return dict(zip(("hits", "remote_hits", "misses", "uncacheable"), map(int, m.groups()),
                    strict=True))


def build_hello_initramfs(dest: Path, with_init: bool = True) -> Path:
    """A one-program initramfs: tests/data/hello-init.c cross-compiled, as /init."""
    from embedbuild.cpio import Entry, write_newc

    exe = dest / "hello-init"
    subprocess.run(["arm-linux-gnueabihf-gcc", "-static", "-Os", "-o", exe,
                    ROOT / "tests" / "data" / "hello-init.c"], check=True)
    entries = [Entry("dev", "dir", 0o755), Entry("dev/console", "char", 0o600, major=5, minor=1)]
    if with_init:
        entries.append(Entry("init", "file", 0o755, data=exe.read_bytes()))
    else:
        entries.append(Entry("not-init", "file", 0o755, data=exe.read_bytes()))
    cpio = dest / ("hello.cpio" if with_init else "no-init.cpio")
    with open(cpio, "wb") as f:
        write_newc(entries, f)
    return cpio


@pytest.fixture(scope="session")
def hello_initramfs(tmp_path_factory) -> Path:
    return build_hello_initramfs(tmp_path_factory.mktemp("hello"))


# To the line's end: the console matches as text arrives, and "(\S+)" alone matched
# "6" of "6.1.192" once, when the line came in two pieces.
HELLO_READY = r"embedbuild-test-init: running on (\S+) (\S+)\r?\n"


def qemu_target(board, workdir: Path, result: Path | None = None, flash: Path | None = None):
    """The one target object for a board's QEMU model on this machine (as `boot --qemu`
    makes it), its flash backed by ``flash`` (None: a new erased one in ``workdir``)."""
    from embedbuild.rig.bench import BenchOptions
    from embedbuild.rig.target import Target

    return Target(board, BenchOptions().bench(board, flash), workdir, result)
