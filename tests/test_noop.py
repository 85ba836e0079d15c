"""A no-op build is answered from the memo of what the last build's load and plan read
(embedbuild/noop.py), and every change the full path would see takes the full path.
The step built is the base segment (segment0): no source, a few seconds a build on an
idle machine; marked slow for the builds (about a minute in all)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli

from embedbuild import noop
from embedbuild.store import Store

pytestmark = pytest.mark.slow

STEP = "segment0"


def build(board: Path, store: Path, link: Path, env: dict | None = None):
    return cli("build", str(board), "--step", STEP, "--out-link", str(link), store=store,
               env=env)


def memos(store: Path) -> dict[str, int]:
    """Each memo file with its modification time: the full path rewrites its memo."""
    return {p.name: p.stat().st_mtime_ns for p in (store / ".noop").glob("*.json")}


@pytest.fixture
def built(boards: Path, tmp_path: Path) -> tuple[Path, Path, Path, str]:
    board, store, link = boards / "qemu-arm-virt", tmp_path / "store", tmp_path / "result"
    r = build(board, store, link)
    assert r.code == 0, r.err
    return board, store, link, r.out


def test_a_no_op_build_is_answered_from_the_memo(built):
    board, store, link, out = built
    before = memos(store)
    assert len(before) == 1
    link.unlink()
    r = build(board, store, link)
    assert r.code == 0 and r.out == out and r.own_err == "", r.err
    assert link.resolve() == Path(out.strip())  # the link is made again
    assert memos(store) == before  # answered without planning: the memo was not rewritten


@pytest.mark.parametrize("change", ["file edited", "file added beside", "memo damaged",
                                    "memo of another shape", "item removed"])
def test_every_change_takes_the_full_path(built, change: str):
    board, store, link, out = built
    [memo] = (store / ".noop").glob("*.json")
    if change == "file edited":
        toml = board / "board.toml"
        toml.write_text(toml.read_text().replace('description = "', 'description = "x ', 1))
    elif change == "file added beside":
        (board / "notes.txt").write_text("a file the loader may look for\n")
    elif change == "memo damaged":
        memo.write_bytes(b"[" * 100_000)
    elif change == "memo of another shape":
        data = json.loads(memo.read_text())
        data["items"] = ["../../etc"]
        memo.write_text(json.dumps(data))
    else:
        Store(store).discard(Path(out.strip()))
    before = memo.stat().st_mtime_ns
    r = build(board, store, link)
    assert r.code == 0, r.err
    assert r.out == out  # the same result: none of these changes the segment's inputs
    assert Path(out.strip()).is_dir()
    assert memo.stat().st_mtime_ns != before  # the full path ran and wrote a new memo


def test_a_damaged_item_is_refused_as_by_the_full_path(built):
    board, store, link, out = built
    item = Path(out.strip())
    (store / ".meta" / item.name / "damage").write_text("a file differs\n")
    r = build(board, store, link)
    assert r.code == 1 and "not trusted" in r.err and "Traceback" not in r.err, r.err


def test_another_environment_or_argument_has_its_own_memo(built, tmp_path: Path):
    board, store, link, _ = built
    r = build(board, store, link, env={"EMBEDBUILD_DOWNLOADS": str(tmp_path / "dl")})
    assert r.code == 0, r.err
    r = cli("build", str(board), "--step", "segment1", "--out-link", str(link), store=store)
    assert r.code == 0, r.err
    assert len(memos(store)) == 3


def test_a_changed_embedbuild_is_a_miss(tmp_path: Path, monkeypatch):
    """In process: a file of the package added, or one changed, invalidates the memo."""
    package = tmp_path / "package"
    package.mkdir()
    (package / "plan.py").write_text("# v1\n")
    monkeypatch.setattr(noop, "PACKAGE", package)
    store = tmp_path / "store"
    item = store / "0123-item"
    item.mkdir(parents=True)
    (store / ".meta" / item.name).mkdir(parents=True)
    (store / ".meta" / item.name / "info.json").write_text('{"name": "item"}')
    memo = noop.Memo(store, {"board": "b"})
    with noop.Recorder([store]) as rec:
        (tmp_path / "input.toml").write_text("x = 1\n")
        (tmp_path / "input.toml").read_text()
    memo.save(rec, [item], item, ["a warning"])
    assert memo.answer() == (item, ["a warning"])
    (package / "new.py").write_text("")
    assert memo.answer() is None
    memo.save(rec, [item], item, [])
    assert memo.answer() == (item, [])
    (package / "plan.py").write_text("# v2, longer\n")
    assert memo.answer() is None
