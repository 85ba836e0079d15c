"""The store: atomic items, locking, gc and verify (with small synthetic steps)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from embedbuild.errors import StepError
from embedbuild.scheduler import realise
from embedbuild.step import Context, Step
from embedbuild.store import Store


def _writer(text: str, calls: list | None = None):
    def build(ctx: Context) -> None:
        if calls is not None:
            calls.append(ctx.step.name)
        (ctx.out / "out.txt").write_text(
            text + "".join((d / "out.txt").read_text() for d in ctx.deps.values())
        )

    return build


def test_item_built_once_and_reused(tmp_path: Path):
    store = Store(tmp_path / "s")
    calls: list[str] = []
    a = Step("t", "a", 1, {"x": 1}, _writer("a", calls))
    b = Step("t", "b", 1, {}, _writer("b", calls), deps={"a": a})
    paths = realise(store, b)
    assert (paths[b.key] / "out.txt").read_text() == "ba"
    realise(
        store,
        Step(
            "t",
            "b",
            1,
            {},
            _writer("b", calls),
            deps={"a": Step("t", "a", 1, {"x": 1}, _writer("a", calls))},
        ),
    )
    assert calls == ["a", "b"]


def test_key_changes_with_inputs_version_and_deps():
    a1 = Step("t", "a", 1, {"x": 1}, _writer(""))
    assert a1.key != Step("t", "a", 1, {"x": 2}, _writer("")).key
    assert a1.key != Step("t", "a", 2, {"x": 1}, _writer("")).key
    b1 = Step("t", "b", 1, {}, _writer(""), deps={"a": a1})
    b2 = Step("t", "b", 1, {}, _writer(""), deps={"a": Step("t", "a", 1, {"x": 2}, _writer(""))})
    assert b1.key != b2.key


def test_failed_step_leaves_nothing(tmp_path: Path):
    store = Store(tmp_path / "s")

    def bad(ctx: Context) -> None:
        (ctx.out / "half").write_text("half-written")
        ctx.run.run(["sh", "-c", "echo compiling; echo boom >&2; exit 3"], what="compiler")

    s = Step("t", "bad", 1, {}, bad)
    with pytest.raises(StepError) as e:
        realise(store, s)
    assert "exit status 3" in str(e.value) and "boom" in (e.value.log_tail or "")
    assert store.items() == []
    assert not list((store.root / ".tmp").iterdir())
    assert Path(e.value.log_path or "").is_file()


def test_failure_cancels_running_sibling(tmp_path: Path):
    store = Store(tmp_path / "s")

    def slow(ctx: Context) -> None:
        ctx.run.run(["sleep", "30"])

    def bad(ctx: Context) -> None:
        ctx.run.run(["false"])

    top = Step(
        "t",
        "top",
        1,
        {},
        _writer(""),
        deps={"slow": Step("t", "slow", 1, {}, slow), "bad": Step("t", "bad", 1, {}, bad)},
    )
    t = threading.Timer(20, lambda: pytest.fail("sibling not cancelled"))
    t.start()
    try:
        with pytest.raises(StepError):
            realise(store, top, max_jobs=2)
    finally:
        t.cancel()
    assert store.items() == []


def test_leftover_tmp_of_killed_build_is_not_trusted(tmp_path: Path):
    store = Store(tmp_path / "s")
    s = Step("t", "a", 1, {}, _writer("good"))
    stale = store.root / ".tmp" / f"{s.key[:32]}-a.99999"
    stale.mkdir(parents=True)
    (stale / "out.txt").write_text("half")
    # and a folder at the final place without info.json (cannot happen by rename, but be safe)
    final = store.item_path(s.key, s.name)
    final.mkdir()
    (final / "out.txt").write_text("junk")
    path = realise(store, s)[s.key]
    assert (path / "out.txt").read_text() == "good"
    assert not stale.exists()


def test_concurrent_builders_of_one_key_build_once(tmp_path: Path):
    calls: list[str] = []

    def build(ctx: Context) -> None:
        calls.append("x")
        ctx.run.run(["sleep", "0.5"])
        (ctx.out / "f").write_text("x")

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                realise(Store(tmp_path / "s"), Step("t", "a", 1, {}, build))
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["x"] and len(results) == 3


def test_gc_and_verify(tmp_path: Path):
    store = Store(tmp_path / "s")
    a = Step("t", "a", 1, {}, _writer("a"))
    b = Step("t", "b", 1, {}, _writer("b"), deps={"a": a})
    other = Step("t", "other", 1, {}, _writer("o"))
    paths = realise(store, b)
    realise(store, other)
    link = tmp_path / "result"
    store.link_result(paths[b.key], link)
    assert store.verify() == []
    assert store.gc()[0] == 0  # this process still uses all it realised
    store.release_temp_roots()
    removed, _ = store.gc()
    assert removed == 1
    assert {p.name for p in store.items()} == {paths[a.key].name, paths[b.key].name}
    out = paths[a.key] / "out.txt"
    out.chmod(0o644)
    out.write_text("tampered")
    out.chmod(0o444)
    assert store.verify() == [f"{paths[a.key].name}: modified out.txt (content)"]
    link.unlink()
    store.gc()
    assert store.items() == []
