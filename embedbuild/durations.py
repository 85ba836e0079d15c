"""How long each step took the last time it was built with a store, for the progress
display's percentage and estimate.

Kept in the store's root as ``.durations.json`` (beside the items, never inside one:
no item's content or key depends on it): per step name, the seconds its last build
took and, for a step that counts its work (the kernel: object files), how many units
it made. At most MAX_STEPS names, the least recently built dropped first, so the file
stays a few KiB. Estimates are a convenience: a missing, damaged or unwritable file
is treated as empty and never fails a build.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

FILE = ".durations.json"
MAX_STEPS = 256
MAX_BYTES = 1 << 20  # a file larger than this is not ours to read


@dataclass(frozen=True)
class Duration:
    """A step's last build: its seconds and the units of work it made (None: not counted)."""

    seconds: float
    units: int | None = None


class _Record(BaseModel):
    seconds: float = Field(ge=0, allow_inf_nan=False)
    units: int | None = Field(default=None, ge=0)
    at: float = 0.0


class _File(BaseModel):
    steps: dict[str, _Record] = {}


class Durations:
    """The durations file of a store (its root folder)."""

    def __init__(self, store_root: Path) -> None:
        self.path = store_root / FILE
        self._lock = store_root / (FILE + ".lock")

    def _read(self) -> dict[str, _Record]:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                return {}
            return _File.model_validate(json.loads(data)).steps
        except (OSError, ValueError, ValidationError):
            return {}

    def get(self, name: str) -> Duration | None:
        """The last build of the step ``name``, if one was recorded."""
        r = self._read().get(name)
        return Duration(r.seconds, r.units) if r is not None else None

    def record(self, name: str, seconds: float, units: int | None = None) -> None:
        """Keep ``seconds`` (and ``units``) as the step's last build; best effort."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        with contextlib.suppress(OSError):
            fd = os.open(self._lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                steps = self._read()
                steps[name] = _Record(seconds=round(seconds, 3), units=units, at=time.time())
                keep = sorted(steps.items(), key=lambda kv: kv[1].at)[-MAX_STEPS:]
                tmp = self.path.with_name(f"{FILE}.{os.getpid()}.tmp")
                tmp.write_text(_File(steps=dict(keep)).model_dump_json(exclude_none=True))
                tmp.replace(self.path)
            finally:
                os.close(fd)


def estimate(last: Duration, elapsed: float, done: int | None = None) -> tuple[float, float]:
    """(fraction done, seconds left) of a step ``elapsed`` seconds in, from its last
    build: by the units done against the last build's when both are known (a kernel
    rebuilt through a warm compiler cache runs at another pace than its last build,
    but makes the same files), else by time. The fraction stays below 1 while running;
    seconds left are 0 once the last duration is used up."""
    if done is not None and last.units:
        fraction = min(done / last.units, 0.99)
        if fraction > 0.05:  # too early a rate says little
            return fraction, elapsed * (1 - fraction) / fraction
    if last.seconds <= 0:
        return 0.99, 0.0
    return min(elapsed / last.seconds, 0.99), max(last.seconds - elapsed, 0.0)
