"""gc against running commands: what a process realised stays until it exits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import cli

from embedbuild.scheduler import realise
from embedbuild.step import Step
from embedbuild.store import Store

# A builder in its own process: realise a slow synthetic step, pause where a command
# would do other work (cmd_build prints, boot starts QEMU), then link the result.
BUILDER = """
import sys, time
from pathlib import Path
from embedbuild.scheduler import realise
from embedbuild.step import Step
from embedbuild.store import Store

store, out, tries = Store(Path(sys.argv[1])), Path(sys.argv[2]), int(sys.argv[3])

# The pauses are windows for gc, which runs many times in each (the test counts them).
def build(ctx):
    time.sleep(0.04)
    (ctx.out / "f").write_text(ctx.step.name)

for i in range(tries):
    for name in (f"a{i}", f"a{i}"):  # built, then found in the store (the cached path)
        s = Step("t", name, 1, {}, build)
        path = realise(store, s)[s.key]
        time.sleep(0.02)
        store.link_result(path, out / name)
        (out / name).unlink()
        time.sleep(0.01)
    store.link_result(path, out / name)
    print(path, flush=True)
"""


def test_gc_during_builds_never_removes_their_outputs(tmp_path: Path):
    """20 builds (and 20 cached lookups) while gc runs in a loop: every link resolves."""
    store, out = tmp_path / "s", tmp_path / "out"
    out.mkdir()
    stop = threading.Event()
    runs: list = []

    def collect() -> None:
        while not stop.is_set():
            try:
                runs.append(Store(store).gc())
            except BaseException as e:  # shown by the assert below, not lost in the thread
                runs.append(e)
                raise

    gc = threading.Thread(target=collect)
    p = subprocess.Popen([sys.executable, "-c", BUILDER, str(store), str(out), "20"],
                         stdout=subprocess.PIPE, text=True)
    gc.start()
    try:
        printed, _ = p.communicate(timeout=120)
    finally:
        stop.set()
        gc.join()
    assert p.returncode == 0
    assert all(isinstance(r, tuple) for r in runs), runs[-1]
    assert len(runs) > 20  # gc really ran in between
    paths = printed.split()
    assert len(paths) == 20
    for i, path in enumerate(paths):
        assert (out / f"a{i}").resolve() == Path(path)
        assert (Path(path) / "f").read_text() == f"a{i}"
    # The builder has exited: its temporary roots are gone, the result links stay.
    assert not list((store / ".temproots").iterdir())
    assert Store(store).gc()[0] == 0


def test_items_of_a_running_process_survive_gc_until_it_exits(tmp_path: Path):
    holder = """
import sys
from pathlib import Path
from embedbuild.scheduler import realise
from embedbuild.step import Step
from embedbuild.store import Store
def build(ctx):
    (ctx.out / "f").write_text("x")
s = Step("t", "held", 1, {}, build)
print(realise(Store(Path(sys.argv[1])), s)[s.key], flush=True)
sys.stdin.read()
"""
    p = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path / "s")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdin is not None
    item = Path(p.stdout.readline().strip())
    store = Store(tmp_path / "s")
    assert store.gc()[0] == 0 and item.is_dir()
    p.stdin.close()
    p.wait()
    assert store.gc()[0] == 1 and not item.exists()


def test_roots_of_dead_processes_are_ignored_and_removed(tmp_path: Path):
    store = Store(tmp_path / "s")
    s = Step("t", "a", 1, {}, lambda ctx: (ctx.out / "f").write_text("a"))
    item = realise(store, s)[s.key]
    store.release_temp_roots()
    dead = subprocess.run(["true"]).returncode  # a pid that no longer runs
    stale = [store.root / ".temproots" / name for name in
             (f"{os.getpid()}-1", "999999999-5", f"{dead}-0", "junk")]
    for f in stale:
        f.write_text(item.name + "\n")  # the pid lives but started at another time, ...
    assert store.gc()[0] == 1
    assert not any(f.exists() for f in stale)


def test_lookup_roots_a_cached_item(tmp_path: Path):
    store = Store(tmp_path / "s")
    s = Step("t", "a", 1, {}, lambda ctx: (ctx.out / "f").write_text("a"))
    item = realise(store, s)[s.key]
    store.release_temp_roots()
    assert store.lookup(s.key, s.name) == item
    assert store.gc()[0] == 0
    store.release_temp_roots()
    assert store.gc()[0] == 1
    assert store.lookup(s.key, s.name) is None


@pytest.mark.slow
def test_gc_during_a_real_cli_build(tmp_path: Path):
    """The issue's reproduction: gc while `build --step busybox-src` unpacks, 3 times."""
    for i in range(3):
        store, link = tmp_path / f"s{i}", tmp_path / f"result{i}"
        env = {**os.environ, "EMBEDBUILD_STORE": str(store), "COLUMNS": "200"}
        exe = str(Path(sys.executable).parent / "embedbuild")
        p = subprocess.Popen([exe, "build", "qemu-arm-virt", "--step", "busybox-src",
                              "--out-link", str(link)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not list((store / ".tmp").glob("*busybox*")) and p.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        gcs = 0
        while p.poll() is None:
            assert cli("gc", store=store).code == 0
            gcs += 1
        out, err = p.communicate()
        assert p.returncode == 0, err
        assert gcs > 0 and Path(out.strip()).is_dir() and link.resolve() == Path(out.strip())
        assert (link / "Makefile").is_file()
