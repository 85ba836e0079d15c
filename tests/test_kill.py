"""A build killed with SIGKILL at random moments leaves nothing a later build trusts:
the next build succeeds. Builds are reproducible: every board built into that second
store, at a path unlike the session store's, gives byte-identical outputs.

CI cost: one more build of every board (the arm one is the killed-then-finished
build; the MIPS boards share their source, busybox and dropbear in that store; the
arm64 boards share one kernel, so it is compiled once per store, by odroid-go2, and
qemu-aarch64-virt adds only its initramfs segments and result)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BOARDS, EMBEDBUILD, cli, manifest

pytestmark = pytest.mark.slow

KILLS = 10
# Moments up to this many seconds into each attempt: unpack, config and the
# kernel's make all get hit, while CI time stays bounded.
WINDOW = 50.0


@pytest.fixture(scope="module")
def killed_then_built(tmp_path_factory) -> tuple[Path, Path, list[float]]:
    """qemu-arm-virt killed at random moments, then built to the end, in a store whose
    root is deeper and has longer names than the session store's: paths that leak into
    an output (debug info, build IDs) show up as different bytes."""
    tmp = tmp_path_factory.mktemp("kill")
    store = tmp / "a-second-store-with-a-much-longer-name" / "one-level" / "deeper"
    seed = int(os.environ.get("EMBEDBUILD_KILL_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    moments = []
    env = {**os.environ, "EMBEDBUILD_STORE": str(store)}
    for _ in range(KILLS):
        t = rng.uniform(0.5, WINDOW)
        p = subprocess.Popen(
            [EMBEDBUILD, "build", "qemu-arm-virt", "--out-link", str(tmp / "result")],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            p.wait(timeout=t)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            moments.append(round(t, 1))
    print(f"seed {seed}: killed at {moments}")
    r = cli("build", "qemu-arm-virt", "--out-link", str(tmp / "result"), store=store)
    assert r.code == 0, r.err
    return store, (tmp / "result").resolve(), moments


def test_build_after_sigkills_succeeds_and_store_verifies(killed_then_built):
    store, _result, moments = killed_then_built
    assert moments, "no attempt was killed"
    r = cli("verify", store=store)
    assert r.code == 0, r.out + r.err


@pytest.mark.parametrize("board", BOARDS)
def test_two_stores_at_different_paths_give_identical_outputs(
        board: str, killed_then_built, session_store: Path, tmp_path: Path):
    # The second store is the killed one: the kills ran first, on an empty store.
    second, _, _ = killed_then_built
    results = []
    for store in (session_store, second):
        link = tmp_path / f"result-{len(results)}"
        r = cli("build", board, "--out-link", str(link), store=store)
        assert r.code == 0, r.err
        results.append(link.resolve())
    a, b = results
    assert a.parent != b.parent
    assert manifest(a).files == manifest(b).files
    for name in [*manifest(a).files, "manifest.json"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # The SD-card image (fixed disk id, FAT serial and times) is one of those files.
    if sd := manifest(a).sdcard:
        assert sd.image in manifest(a).files and sd == manifest(b).sdcard
