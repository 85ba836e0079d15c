"""The scheduler: realises a graph of steps in the store, independent steps at once,
never using more cores than the machine has."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from embedbuild.command import Cancelled, Runner
from embedbuild.compiler_cache import CompilerCache
from embedbuild.durations import Duration, Durations
from embedbuild.errors import StepError
from embedbuild.step import Context, Step
from embedbuild.store import Store

if TYPE_CHECKING:
    from embedbuild.cache.substitute import Substituters


def cores() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0))


class Events:
    """Receives scheduler events; the CLI shows them as progress."""

    def started(self, step: Step) -> None: ...
    def expected(self, step: Step, last: Duration) -> None:
        """The step's last build with this store (after started, when there was one)."""
    def progress(self, step: Step, done: int) -> None:
        """Units of work done so far, for a step that counts them (Step.count)."""
    def finished(self, step: Step, seconds: float) -> None: ...
    def substituted(self, step: Step, seconds: float, cache: str) -> None: ...


COUNT_EVERY = 1.0  # seconds between counts of a running step's work


def realise(
    store: Store, target: Step, events: Events | None = None, max_jobs: int | None = None,
    substituters: Substituters | None = None, ccache: CompilerCache | None = None,
) -> dict[str, Path]:
    """Make target's item, building what is missing; independent steps run at once;
    with ``ccache``, the compile steps run their compilers through it.

    Every item of the graph that is in the store is looked up first (so an item
    `verify` found damaged is refused wherever it sits). Then from the target down: a
    step whose item is present, or that a substituter supplies, needs none of its
    dependencies (as in Nix: a present output is all a later step reads); the others
    are built after theirs. Returns step key -> store path for the steps reached. On
    the first failure, running steps are cancelled and the error is raised; nothing
    half-built is kept.
    """
    events = events or Events()
    run = _Realisation(store, events, max_jobs or cores(), ccache, substituters)
    present = {s.key: item for s in target.walk()
               if (item := store.lookup(s.key, s.name)) is not None}
    pending: list[Step] = []
    seen: set[str] = set()

    def need(s: Step) -> None:
        if s.key in seen:
            return
        seen.add(s.key)
        item = present.get(s.key)
        # A secret item is never in a cache, and asking for its key would tell the
        # cache a digest of the secret.
        if item is None and substituters is not None and not s.holds_secret:
            got = substituters.substitute(store, s)
            if got is not None:
                item, cache, seconds = got
                events.substituted(s, seconds, str(cache))
        if item is not None:
            run.paths[s.key] = item
            return
        pending.append(s)
        for d in s.deps.values():
            need(d)

    need(target)
    if pending:
        with store.session():
            run.schedule(pending)
    return run.paths


class _Realisation:
    """The state of one realise call: finished paths, cores in use, cancellation."""

    def __init__(self, store: Store, events: Events, total: int,
                 ccache: CompilerCache | None = None,
                 substituters: Substituters | None = None) -> None:
        self.store = store
        self.events = events
        self.total = total
        self.ccache = ccache
        self.substituters = substituters
        self.paths: dict[str, Path] = {}
        self.cancel = threading.Event()
        self.durations = Durations(store.root)
        self.ran: set[str] = set()  # steps whose build ran here (not another process's)
        self.units: dict[str, int] = {}  # step key -> units its build made (Step.count)

    def jobs(self, s: Step) -> int:
        return min(s.jobs, self.total)

    def schedule(self, pending: list[Step]) -> None:
        """Run the pending steps as their dependencies finish; cores are handed out
        here, small steps first, so a quick step (a DTB, a config) never waits behind a
        long kernel build."""
        waiting = list(pending)
        running: dict[Future, Step] = {}
        free = self.total
        error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.total + 1) as ex:
            try:
                while waiting or running:
                    ready = [w for w in waiting
                             if all(d.key in self.paths for d in w.deps.values())]
                    for s in sorted(ready, key=self.jobs):
                        if error is None and self.jobs(s) <= free:
                            waiting.remove(s)
                            free -= self.jobs(s)
                            running[ex.submit(self.build, s)] = s
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for f in done:
                        s = running.pop(f)
                        free += self.jobs(s)
                        try:
                            self.paths[s.key] = f.result()
                        except Cancelled:
                            pass
                        except BaseException as e:
                            if error is None:
                                error = e
                                self.cancel.set()
            except BaseException:
                self.cancel.set()  # Ctrl-C: kill what runs, keep nothing half-built
                raise
        if error is not None:
            raise error

    def build(self, s: Step) -> Path:
        """Realise one step whose dependencies are all in the store."""
        if self.cancel.is_set():
            raise Cancelled()
        self.events.started(s)
        if (last := self.durations.get(s.name)) is not None:
            self.events.expected(s, last)
        t0 = time.monotonic()
        info = {
            "kind": s.kind,
            "name": s.name,
            "key": s.key,
            "version": s.version,
            "inputs": s.inputs,
            "outputs": s.outputs,
            "deps": [self.paths[d.key].name for d in s.deps.values()],
        }
        path = self.store.realise(s.key, s.name, info,
                                  lambda tmp, log: self._run_step(s, tmp, log),
                                  secret=s.holds_secret)
        seconds = time.monotonic() - t0
        # Only a build that ran here is a measure (the item may have been made by
        # another process meanwhile: then this took no time of its own).
        if s.key in self.ran:
            self.durations.record(s.name, seconds, self.units.get(s.key))
        self.events.finished(s, seconds)
        return path

    def _run_step(self, s: Step, tmp: Path, log: Path) -> dict | None:
        scratch = tmp.with_name(tmp.name + ".scratch")
        scratch.mkdir()
        cc = self.ccache if s.compilers else None
        # The compiler links and ccache's stats log, beside (not in) the step's folders.
        cc_work = tmp.with_name(tmp.name + ".ccache")
        env = cc.prepare(cc_work, s.compilers, self.store.root) if cc else None
        run = Runner(log, self.cancel, env)
        ctx = Context(out=tmp, deps={role: self.paths[d.key] for role, d in s.deps.items()},
                      run=run, jobs=self.jobs(s), step=s, scratch=scratch,
                      substitute_download=(self.substituters.fetch_download
                                           if self.substituters else None))
        stop = threading.Event()
        if s.count is not None:
            threading.Thread(target=self._count, args=(s, scratch, stop), daemon=True).start()
        try:
            s.build(ctx)
            if s.count is not None:
                with contextlib.suppress(OSError):
                    self.units[s.key] = s.count(scratch)
            if cc:
                cc.report(run, cc_work)
        finally:
            stop.set()
            self.store.discard(scratch)
            if cc:
                self.store.discard(cc_work)
        missing = [n for n in s.outputs if not ctx.output(n).exists()]
        if missing:
            raise StepError(f"step {s.name} did not write its declared output(s) "
                            f"{', '.join(missing)}", log_path=str(log))
        self.ran.add(s.key)
        return ctx.origin

    def _count(self, s: Step, scratch: Path, stop: threading.Event) -> None:
        """Report the running step's work done, every COUNT_EVERY seconds."""
        assert s.count is not None
        while not stop.wait(COUNT_EVERY):
            try:
                self.events.progress(s, s.count(scratch))
            except OSError:  # the folder changes under the walk: next time
                continue
