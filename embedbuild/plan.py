"""Steps, their keys, and the scheduler that realises a graph of them in the store.

A step is a pure function of its inputs: ``inputs`` (JSON data, including the
sha256 of every file it reads) and the outputs of ``deps``. Its key hashes all
of that plus the step kind's code version, so an unchanged key means an
unchanged output.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from embedbuild.command import Cancelled, Runner
from embedbuild.store import Store


@dataclass
class Context:
    """What a step's build function gets: where to write and what it may read."""

    out: Path
    deps: dict[str, Path]
    run: Runner
    jobs: int
    step: Step
    # Intermediate files (a kernel's object tree): removed after the step, in the background.
    scratch: Path
    # Set by a step that unpacks a pinned archive: see Store.realise.
    origin: dict | None = None


@dataclass(eq=False)
class Step:
    """One node of the build graph.

    Args:
        kind: the kind of step ("kernel", "kconfig", ...).
        name: human-readable name, part of the store path.
        version: code version of this kind of step; bump when its output changes.
        inputs: JSON-able data the output depends on (file contents by sha256).
        deps: role -> step whose output this step reads.
        build: the function that writes the output into ``ctx.out``.
        jobs: cores the step keeps busy (the kernel's make -j); at most the machine's.
    """

    kind: str
    name: str
    version: int
    inputs: dict[str, Any]
    build: Callable[[Context], None]
    deps: dict[str, Step] = field(default_factory=dict)
    jobs: int = 1

    @cached_property
    def key(self) -> str:
        """sha256 of everything that can change the output."""
        doc = {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "inputs": self.inputs,
            "deps": {role: d.key for role, d in sorted(self.deps.items())},
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def walk(self) -> Iterator[Step]:
        """This step and all it depends on, dependencies first, each once."""
        seen: set[int] = set()

        def visit(s: Step) -> Iterator[Step]:
            if id(s) in seen:
                return
            seen.add(id(s))
            for d in s.deps.values():
                yield from visit(d)
            yield s

        yield from visit(self)


def cores() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0))


class Events:
    """Receives scheduler events; the CLI shows them as progress."""

    def started(self, step: Step) -> None: ...
    def finished(self, step: Step, seconds: float) -> None: ...


def realise(
    store: Store, target: Step, events: Events | None = None, max_jobs: int | None = None
) -> dict[str, Path]:
    """Build every missing step of target's graph; independent steps run at once.

    Returns step key -> store path. On the first failure, running steps are
    cancelled and the error is raised; nothing half-built is kept.
    """
    events = events or Events()
    total = max_jobs or cores()
    steps = list(target.walk())
    paths: dict[str, Path] = {}
    pending = []
    for s in steps:
        if (item := store.lookup(s.key, s.name)) is not None:
            paths[s.key] = item
        else:
            pending.append(s)
    if not pending:
        return paths

    cancel = threading.Event()

    def run(s: Step) -> Path:
        jobs = min(s.jobs, total)
        if cancel.is_set():
            raise Cancelled()
        events.started(s)
        t0 = time.monotonic()
        info = {
            "kind": s.kind,
            "name": s.name,
            "key": s.key,
            "version": s.version,
            "inputs": s.inputs,
            "deps": [paths[d.key].name for d in s.deps.values()],
        }

        def build(tmp: Path, log: Path) -> dict | None:
            deps = {role: paths[d.key] for role, d in s.deps.items()}
            scratch = tmp.with_name(tmp.name + ".scratch")
            scratch.mkdir()
            ctx = Context(out=tmp, deps=deps, run=Runner(log, cancel), jobs=jobs, step=s,
                          scratch=scratch)
            try:
                s.build(ctx)
            finally:
                store.discard(scratch)
            return ctx.origin

        path = store.realise(s.key, s.name, info, build)
        events.finished(s, time.monotonic() - t0)
        return path

    with store.session(), ThreadPoolExecutor(max_workers=total + 1) as ex:
        running: dict[Future, Step] = {}
        waiting = list(pending)
        free = total
        error: BaseException | None = None
        try:
            while waiting or running:
                # Cores are handed out here, small steps first, so a quick step
                # (a DTB, a config) never waits behind a long kernel build.
                ready = [w for w in waiting if all(d.key in paths for d in w.deps.values())]
                for s in sorted(ready, key=lambda w: w.jobs):
                    jobs = min(s.jobs, total)
                    if error is None and jobs <= free:
                        waiting.remove(s)
                        free -= jobs
                        running[ex.submit(run, s)] = s
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    s = running.pop(f)
                    free += min(s.jobs, total)
                    try:
                        paths[s.key] = f.result()
                    except Cancelled:
                        pass
                    except BaseException as e:
                        if error is None:
                            error = e
                            cancel.set()
        except BaseException:
            cancel.set()  # Ctrl-C: kill what runs, keep nothing half-built
            raise
        if error is not None:
            raise error
    return paths
