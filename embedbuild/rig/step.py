"""Steps: every rig action reported as start and stop events with their times.

A Steps recorder belongs to one target; drivers and the strategy open steps on it
(``with steps("tftp zImage", stage=True):`` or the ``@step()`` decorator on a method
of an object that has ``steps``). Each event keeps its absolute start and end
(time.monotonic()), its nesting depth, the fields given and the error that ended it;
subscribers see each start and stop as it happens (the command line's progress, a
log). The boot report and its timeline are read from these events.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["start", "stop"]
Subscriber = Callable[["StepEvent", Phase], None]


@dataclass
class StepEvent:
    """One rig action.

    Args:
        name: what was done ("power on", "tftp zImage", "U-Boot run").
        start: time.monotonic() when it began.
        end: when it ended (None while it runs).
        depth: how many steps enclose it.
        stage: a stage of the boot timeline (power-on, U-Boot, each load, kernel, init).
        fields: what the action was called with or found (a command, a file, bytes).
        error: why it failed, if it did.
    """

    name: str
    start: float
    end: float | None = None
    depth: int = 0
    stage: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def seconds(self) -> float:
        """How long it took (so far, while it runs)."""
        return (self.end if self.end is not None else time.monotonic()) - self.start


class Steps:
    """The steps of one target, in the order they started."""

    def __init__(self) -> None:
        self.events: list[StepEvent] = []
        self._subscribers: list[Subscriber] = []
        self._depth = 0

    def subscribe(self, fn: Subscriber) -> None:
        """Call ``fn(event, "start"|"stop")`` for every step from now on."""
        self._subscribers.append(fn)

    def _tell(self, event: StepEvent, phase: Phase) -> None:
        for fn in self._subscribers:
            fn(event, phase)

    @contextlib.contextmanager
    def __call__(self, name: str, *, stage: bool = False, **fields: Any) -> Iterator[StepEvent]:
        """A step around the body; the body may add to ``event.fields``."""
        event = StepEvent(name, time.monotonic(), depth=self._depth, stage=stage,
                          fields=fields)
        self.events.append(event)
        self._depth += 1
        self._tell(event, "start")
        try:
            yield event
        except BaseException as e:
            event.error = getattr(e, "message", None) or type(e).__name__
            raise
        finally:
            event.end = time.monotonic()
            self._depth -= 1
            self._tell(event, "stop")

    def mark(self, name: str, *, at: float | None = None, stage: bool = False,
             **fields: Any) -> StepEvent:
        """An instant (the power coming on): a step that starts and ends at ``at``."""
        t = time.monotonic() if at is None else at
        event = StepEvent(name, t, t, depth=self._depth, stage=stage, fields=fields)
        self.events.append(event)
        self._tell(event, "start")
        self._tell(event, "stop")
        return event

    def span(self, name: str, start: float, end: float, **fields: Any) -> StepEvent:
        """A stage whose start and end were seen, not lived through (the kernel, from its
        first line to /init): recorded as one with ``stage`` set."""
        event = StepEvent(name, start, end, depth=self._depth, stage=True, fields=fields)
        self.events.append(event)
        self._tell(event, "start")
        self._tell(event, "stop")
        return event

    def first(self, name: str) -> StepEvent | None:
        """The first finished step of this name."""
        return next((e for e in self.events if e.name == name and e.end is not None), None)


def step(name: str | None = None, args: tuple[str, ...] = ()) -> Callable:
    """Decorate a method of an object with a ``steps`` attribute (a Steps or None): each
    call is a step named ``name`` (default: the class and method), recording the
    arguments listed in ``args``."""
    def wrap(fn: Callable) -> Callable:
        import inspect

        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(self, *a, **kw):
            steps: Steps | None = getattr(self, "steps", None)
            if steps is None:
                return fn(self, *a, **kw)
            bound = sig.bind(self, *a, **kw)
            fields = {k: bound.arguments[k] for k in args if k in bound.arguments}
            label = name or f"{type(self).__name__}.{fn.__name__}"
            with steps(label, **fields):
                return fn(self, *a, **kw)
        return inner
    return wrap
