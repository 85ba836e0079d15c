"""`base = "allnoconfig"` means what the kernel's own allnoconfig means: for every
board, the config step's .config equals, symbol by symbol, the one
`scripts/kconfig/merge_config.sh -n` makes from the same fragments in the same tree.

Kconfig work only (seconds per board): the tree is the session store's unpacked
source, shared with the board builds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import BOARDS, cli

from embedbuild.kconfig import read_config
from embedbuild.load import load_board
from embedbuild.plan import plan_board
from embedbuild.store import Store

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", BOARDS)
def test_allnoconfig_matches_merge_config_n(name: str, session_store: Path, tmp_path: Path):
    board = load_board(name)
    if board.kernel_from:
        pytest.skip(f"its kernel is {board.kernel_from}'s, checked there")
    if board.kernel.base != "allnoconfig":
        pytest.skip(f"kernel.base is {board.kernel.base}")
    r = cli("build", name, "--step", "kconfig", "--out-link", str(tmp_path / "kc"),
            store=session_store)
    assert r.code == 0, r.err
    plan, store = plan_board(board), Store(session_store)
    tree, kconfig = plan.steps["tree"], plan.steps["kconfig"]
    src = store.item_path(tree.key, tree.name) / tree.output_path("tree")
    ours = read_config(store.item_path(kconfig.key, kconfig.name) / kconfig.output_path("config"))

    # merge_config.sh runs `make` in its working folder and writes its temporary files
    # there: work in an O= folder (its generated Makefile includes the tree's), so
    # the shared tree stays untouched.
    build = tmp_path / "build"
    build.mkdir()
    env = {**os.environ, "ARCH": board.arch.value, "CROSS_COMPILE": board.cross_compile}
    subprocess.run(["make", "-C", src, f"O={build}", "-s", "outputmakefile"], env=env,
                   check=True, capture_output=True)
    p = subprocess.run([src / "scripts/kconfig/merge_config.sh", "-n",
                        *map(str, board.kernel.fragments)],
                       cwd=build, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    theirs = read_config(build / ".config")

    differ = sorted(s for s in ours.keys() | theirs.keys()
                    if ours.get(s, "n") != theirs.get(s, "n"))
    assert not differ, "\n".join(
        f"CONFIG_{s}: embedbuild {ours.get(s, 'n')}, merge_config.sh -n {theirs.get(s, 'n')}"
        for s in differ)
    # Nothing requested was lost on the way (merge_config.sh only warns about it).
    assert "not in final .config" not in p.stdout
