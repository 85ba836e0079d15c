"""Progress with an estimate: each step's last build is kept beside the store (bounded,
damage ignored), the scheduler reports it and a counting step's work as it goes, and
the progress display turns that into a percentage and the time left."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from embedbuild import durations, scheduler
from embedbuild.durations import Duration, Durations, estimate
from embedbuild.scheduler import Events, realise
from embedbuild.step import Context, Step
from embedbuild.store import Store


def test_last_build_kept_per_step_name(tmp_path: Path):
    d = Durations(tmp_path)
    assert d.get("board-kernel") is None
    d.record("board-kernel", 312.25, 2890)
    d.record("board-busybox", 48.0)
    d.record("board-kernel", 95.5, 2891)  # the last build counts
    assert d.get("board-kernel") == Duration(95.5, 2891)
    assert Durations(tmp_path).get("board-busybox") == Duration(48.0, None)
    # Beside the items, never one of them.
    assert (tmp_path / ".durations.json").is_file()


def test_bounded_to_the_most_recent_steps(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(durations, "MAX_STEPS", 5)
    d = Durations(tmp_path)
    for i in range(12):
        d.record(f"step-{i}", float(i))
    kept = json.loads((tmp_path / ".durations.json").read_text())["steps"]
    assert set(kept) == {f"step-{i}" for i in range(7, 12)}


@pytest.mark.parametrize("damage", [b"{not json", b'{"steps": {"a": {"seconds": -1}}}',
                                    b'{"steps": []}', b"\xff\xfe", b" " * (2 << 20)])
def test_a_damaged_file_is_empty_and_replaced(tmp_path: Path, damage: bytes):
    (tmp_path / ".durations.json").write_bytes(damage)
    d = Durations(tmp_path)
    assert d.get("a") is None
    d.record("a", 3.0)
    assert d.get("a") == Duration(3.0)


def test_an_unwritable_store_root_is_no_error(tmp_path: Path):
    d = Durations(tmp_path / "missing")
    d.record("a", 1.0)
    assert d.get("a") is None


def test_estimate_by_time_and_by_work():
    # By time: 30 s into a step that took 120 s.
    assert estimate(Duration(120.0), 30.0) == (0.25, 90.0)
    # Past the last duration: not done, nothing left to promise.
    assert estimate(Duration(120.0), 150.0) == (0.99, 0.0)
    # By work: half the files in 20 s (a warm compiler cache) although the last
    # build took 300 s: 20 s more, not 280.
    assert estimate(Duration(300.0, 2000), 20.0, 1000) == (0.5, 20.0)
    # Too early for a rate: by time.
    assert estimate(Duration(300.0, 2000), 3.0, 40) == (0.01, 297.0)


class _Seen(Events):
    def __init__(self) -> None:
        self.expected_: list[tuple[str, Duration]] = []
        self.progress_: list[int] = []
        self.counted = threading.Event()

    def expected(self, step: Step, last: Duration) -> None:
        self.expected_.append((step.name, last))

    def progress(self, step: Step, done: int) -> None:
        self.progress_.append(done)
        if done >= 2:
            self.counted.set()


def _counting_step(seen: _Seen, version: int) -> Step:
    def build(ctx: Context) -> None:
        for n in ("a.o", "b.o"):
            (ctx.scratch / n).write_text("")
        # The counter reports the work while the step runs.
        assert seen.counted.wait(10), "no progress reported within 10 s"
        (ctx.scratch / "sub").mkdir()
        (ctx.scratch / "sub" / "c.o").write_text("")
        (ctx.scratch / "c.txt").write_text("")
        (ctx.out / "done").write_text("")

    return Step("t", "counts", version, {}, build,
                count=lambda d: sum(1 for p in d.rglob("*.o")))


def test_scheduler_records_and_reports(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(scheduler, "COUNT_EVERY", 0.01)
    store = Store(tmp_path / "store")
    first = _Seen()
    realise(store, _counting_step(first, 1), first)
    assert first.expected_ == [] and 2 in first.progress_
    last = Durations(store.root).get("counts")
    assert last is not None and last.units == 3 and last.seconds > 0
    # Another build of the step (another key, the same name) is expected to be alike.
    second = _Seen()
    realise(store, _counting_step(second, 2), second)
    assert second.expected_ == [("counts", last)]
    # An item already in the store is no build: nothing recorded, nothing expected.
    third = _Seen()
    realise(store, _counting_step(third, 2), third)
    assert third.expected_ == [] and Durations(store.root).get("counts").units == 3


def test_progress_line(tmp_path: Path):
    from rich.console import Console

    from embedbuild.cli import _Progress

    step = Step("t", "board-kernel", 1, {}, lambda ctx: None)
    p = _Progress(Console(file=io.StringIO()))
    p.started(step)
    assert p._how_far("board-kernel", 12.0) == "12s"
    p.progress(step, 700)
    assert p._how_far("board-kernel", 12.0) == "12s, 700 files"
    p.expected(step, Duration(300.0, 2800))
    assert p._how_far("board-kernel", 100.0) == "100s, 700 of 2800 files, 25%, about 5m00s left"
    p.expected(step, Duration(90.0))
    p.done.clear()
    assert p._how_far("board-kernel", 45.0) == "45s, 50%, about 45s left"
    assert p._how_far("board-kernel", 95.0) == "95s, longer than last time (1m30s)"
