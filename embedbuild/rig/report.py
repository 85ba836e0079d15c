"""The boot report: where the time went, read from a target's step events.

``stages`` gives the seconds of each stage for the lines the command line prints;
``timeline`` keeps every stage's absolute start and end (time.monotonic()) and each
TFTP transfer as the server saw it, so a picture of the boot (power-on, U-Boot, each
load, kernel, /init, on one time axis) can be drawn from it later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from embedbuild.rig.step import StepEvent, Steps
from embedbuild.rig.tftp import Transfer

# The stage from power-on to the ready line, added by the strategy once ready.
TOTAL = "power on to ready"


@dataclass
class BootReport:
    """What a boot did, from the target's steps.

    Args:
        steps: the target's step recorder.
        transfers: each TFTP transfer the target's server finished.
    """

    steps: Steps = field(default_factory=Steps)
    transfers: list[Transfer] = field(default_factory=list)

    @property
    def timeline(self) -> list[StepEvent]:
        """The finished stages in the order they started."""
        return sorted((e for e in self.steps.events if e.stage and e.end is not None),
                      key=lambda e: e.start)

    @property
    def stages(self) -> list[tuple[str, float]]:
        """(stage, seconds) in order, the whole (power on to ready) last; instants (the
        power coming on) left out."""
        parts = [(e.name, e.seconds) for e in self.timeline
                 if e.end != e.start and e.name != TOTAL]
        return parts + [(e.name, e.seconds) for e in self.timeline if e.name == TOTAL]

    @property
    def powered_on(self) -> float | None:
        """When the power came on (time.monotonic()), if the bench switched it."""
        e = self.steps.first("power on")
        return e.start if e is not None else None

    def lines(self) -> list[str]:
        """The report as the command line prints it."""
        out = [f"{name:28} {secs:6.2f} s" for name, secs in self.stages]
        out += [
            f"  tftp {t.filename:21} {t.size / 2**20:6.2f} MiB in {t.seconds:.2f} s "
            f"({t.rate:.1f} MiB/s, blocks {t.blksize} x {t.window})"
            for t in self.transfers
        ]
        return out

    def to_json(self) -> dict:
        """The timeline as data, times in seconds from the power coming on (or the first
        stage): each stage with its start and end, each transfer with its file, bytes,
        start and end, and every step (stages, U-Boot commands, QEMU's start...) with its
        depth."""
        stages = self.timeline
        zero = self.powered_on if self.powered_on is not None else \
            (stages[0].start if stages else 0.0)
        return {
            "stages": [{"name": e.name, "start": round(e.start - zero, 6),
                        "end": round((e.end or e.start) - zero, 6), **_plain(e.fields)}
                       for e in stages],
            "transfers": [{"file": t.filename, "bytes": t.size, "ok": t.ok,
                           "blksize": t.blksize, "window": t.window,
                           "start": round(t.started - zero, 6),
                           "end": round(t.started + t.seconds - zero, 6)}
                          for t in self.transfers if t.started],
            "steps": [{"name": e.name, "depth": e.depth, "start": round(e.start - zero, 6),
                       "end": round(e.end - zero, 6), **_plain(e.fields),
                       **({"error": e.error} if e.error else {})}
                      for e in self.steps.events if e.end is not None],
        }

    def write(self, path: Path) -> None:
        """Write ``to_json()`` to a file (the bench folder keeps the last boot's)."""
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


def _plain(fields: dict) -> dict:
    """The fields JSON can hold as they are."""
    return {k: v for k, v in fields.items() if isinstance(v, (str, int, float, bool))}
