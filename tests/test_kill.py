"""A build killed with SIGKILL at random moments leaves nothing a later build trusts:
the next build succeeds. Builds are reproducible: a board built into that second store,
at a path unlike the session store's, gives byte-identical outputs.

The compiler cache changes no byte: the session store compiles through ccache (the
session's own, see conftest.py), the killed arm build compiles without it, and the
outputs are compared byte for byte. qemu-arm-vboot shares that kernel and adds our
U-Boot, the control DTB, the signed FIT and a busybox of its own config: its second
build compiles U-Boot and that busybox (against musl's staging sysroot, in the second
store's work folder) through the warm cache, and every compile step it ran must mostly
hit it: a store path that reaches ccache's hash (an absolute path, a file hashed by
time) shows up as misses.

CI cost: one more build of qemu-arm-virt (killed, then finished, without ccache) and of
qemu-arm-vboot's U-Boot (about 150 s under load) and busybox (through the warm cache:
569 of 570 compiles hit, where they all missed before the staging sysroot's specs file
was hashed by content: minutes less under load). The MIPS and arm64 boards are not
built a second time in CI: a second kernel of each cost 6 to 24 minutes under load,
more than the whole suite may grow by this round. Their kernels are made by the same
step code as the arm one (same flags for paths, dates and build IDs); set
EMBEDBUILD_TEST_EVERY_BOARD_TWICE=1 to compare them all (about 45 minutes)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BOARDS, EMBEDBUILD, ccache_counts, cli, manifest, step_log

from embedbuild.load import load_board
from embedbuild.plan import plan_board
from embedbuild.store import Store

pytestmark = pytest.mark.slow

KILLS = 6
# Moments up to this many seconds into each attempt: unpack, config and the
# kernel's make all get hit, while CI time stays bounded.
WINDOW = 50.0
# Share of a warm second build's cacheable compiles that must be ccache hits.
MIN_HIT_RATE = 0.9


@pytest.fixture(scope="module")
def killed_then_built(tmp_path_factory) -> tuple[Path, Path, list[float]]:
    """qemu-arm-virt killed at random moments, then built to the end, in a store whose
    root is deeper and has longer names than the session store's: paths that leak into
    an output (debug info, build IDs) show up as different bytes. Compiled without
    ccache: the session store's build compiled through it."""
    tmp = tmp_path_factory.mktemp("kill")
    store = tmp / "a-second-store-with-a-much-longer-name" / "one-level" / "deeper"
    seed = int(os.environ.get("EMBEDBUILD_KILL_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    moments = []
    env = {**os.environ, "EMBEDBUILD_STORE": str(store)}
    for _ in range(KILLS):
        t = rng.uniform(0.5, WINDOW)
        p = subprocess.Popen(
            [EMBEDBUILD, "build", "qemu-arm-virt", "--no-ccache", "--out-link",
             str(tmp / "result")],
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
    r = cli("build", "qemu-arm-virt", "--no-ccache", "--out-link", str(tmp / "result"),
            store=store)
    assert r.code == 0, r.err
    return store, (tmp / "result").resolve(), moments


def test_build_after_sigkills_succeeds_and_store_verifies(killed_then_built):
    store, _result, moments = killed_then_built
    assert moments, "no attempt was killed"
    r = cli("verify", store=store)
    assert r.code == 0, r.out + r.err


TWICE = BOARDS if os.environ.get("EMBEDBUILD_TEST_EVERY_BOARD_TWICE") == "1" \
    else ["qemu-arm-virt", "qemu-arm-vboot"]


@pytest.mark.parametrize("board", TWICE)
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
    # Every compile step (a step that runs compilers: kernel, U-Boot, the libc, every
    # package against its staging sysroot), and what the second build compiled itself
    # (a step shared with a board built there before, such as qemu-arm-vboot's kernel,
    # was not compiled now).
    steps = plan_board(load_board(board)).steps
    compiles = [role for role, s in steps.items() if s.compilers]
    compiled_now = {role for role in compiles
                    if re.search(rf"^\s*built {re.escape(steps[role].name)} in ",
                                 r.out + r.err, re.M)}
    a, b = results
    assert a.parent != b.parent
    assert manifest(a).files == manifest(b).files
    for name in [*manifest(a).files, "manifest.json"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # The SD-card image (fixed disk id, FAT serial and times) is one of those files.
    if sd := manifest(a).sdcard:
        assert sd.image in manifest(a).files and sd == manifest(b).sdcard
    for role in compiles:
        if board != "qemu-arm-virt" and role not in compiled_now:
            continue
        first = ccache_counts(step_log(session_store, board, role))
        again = ccache_counts(step_log(second, board, role))
        if board == "qemu-arm-virt":
            assert again is None, f"{role} of the killed store compiled through ccache"
        elif first is not None:  # the session store's build filled this session's cache
            assert again is not None, f"{role} did not compile through ccache"
            rate = again["hits"] / max(1, again["hits"] + again["misses"])
            print(f"{board} {role} second build: {again}")
            assert rate >= MIN_HIT_RATE, f"{role}: {again}"


def test_the_kernel_is_the_same_with_and_without_ccache(killed_then_built, session_store,
                                                        tmp_path: Path):
    """vmlinux, the image, System.map and the config, compiled through ccache (session
    store) and without it (the killed store), byte for byte."""
    second, _, _ = killed_then_built
    r = cli("build", "qemu-arm-virt", "--step", "kernel", "--out-link", str(tmp_path / "k"),
            store=session_store)
    assert r.code == 0, r.err
    if ccache_counts(step_log(session_store, "qemu-arm-virt", "kernel")) is None:
        pytest.skip("the session store's kernel was built without ccache (a reused store)")
    assert ccache_counts(step_log(second, "qemu-arm-virt", "kernel")) is None
    step = plan_board(load_board("qemu-arm-virt")).steps["kernel"]
    items = [Store(s).item_path(step.key, step.name) for s in (session_store, second)]
    for name in step.outputs.values():
        assert (items[0] / name).read_bytes() == (items[1] / name).read_bytes(), name
