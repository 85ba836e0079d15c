"""A build killed with SIGKILL at random moments leaves nothing a later build trusts:
the next build succeeds and its outputs are byte-identical to an uninterrupted
build in another, empty store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import EMBEDBUILD, cli, manifest

pytestmark = pytest.mark.slow

KILLS = 10
# Moments up to this many seconds into each attempt: unpack, config and the
# kernel's make all get hit, while CI time stays bounded.
WINDOW = 50.0


@pytest.fixture(scope="module")
def killed_then_built(tmp_path_factory) -> tuple[Path, Path, list[float]]:
    tmp = tmp_path_factory.mktemp("kill")
    store = tmp / "store"
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


def test_two_empty_stores_give_identical_outputs(killed_then_built, arm_result: Path):
    _, result, _ = killed_then_built
    assert result.parent != arm_result.parent
    a, b = manifest(arm_result), manifest(result)
    assert a.files == b.files
    for name in a.files:
        assert (result / name).read_bytes() == (arm_result / name).read_bytes(), name
