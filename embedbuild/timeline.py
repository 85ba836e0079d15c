"""A boot as a picture: spans on one time axis (power-on, U-Boot, each TFTP load, the
kernel, /init, each service from start to ready), drawn as SVG in the manner of
``systemd-analyze plot`` and bootchart.

Three layers, each usable alone:

- ``render_svg(spans)``: the picture, a pure function of the spans;
- ``boot_spans(lines)``: the spans of one boot from its console lines with the host's
  time of each (what U-Boot, the kernel and the init print; the init's own lines carry
  the kernel's uptime, mapped onto the host's clock at its first line);
- ``read_console_log(path)`` and ``boot_timeline_svg(path, power_on)``: the same from a
  bench's console.log, the one call a boot command or bench needs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from embedbuild.model.system import READY_LINE

# Fill colour of each kind of span.
KINDS = {
    "power": "#444444",
    "firmware": "#6c8ebf",
    "load": "#d79b00",
    "kernel": "#9673a6",
    "init": "#82b366",
    "service": "#3b7dd8",
    "failed": "#b85450",
}


@dataclass(frozen=True)
class Span:
    """One bar of the picture.

    Args:
        label: what ran (shown beside the bar, with its seconds).
        lane: the row it is drawn in; rows come in the order their first span starts.
        start: seconds on the common axis (0: power on).
        end: seconds; equal to start for an instant (drawn as a mark).
        kind: its colour: one of KINDS.
    """

    label: str
    lane: str
    start: float
    end: float
    kind: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise ValueError(f"span {self.label!r}: times must be finite")
        if self.end < self.start:
            raise ValueError(f"span {self.label!r} ends ({self.end}) before it starts "
                             f"({self.start})")
        if self.kind not in KINDS:
            raise ValueError(f"span {self.label!r}: unknown kind {self.kind!r} "
                             f"(known: {', '.join(KINDS)})")


# Layout, in pixels.
LEFT, RIGHT, TOP, ROW, BAR, LANE_LABEL = 150, 240, 56, 22, 14, 140
AXIS_WIDTH = 900  # the time axis, whatever the boot's length
STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


def _tick_step(total: float) -> float:
    """The smallest round step giving at most 12 ticks over ``total`` seconds."""
    return next((s for s in STEPS if total / s <= 12), STEPS[-1] * math.ceil(total / 3600))


def _seconds(s: float) -> str:
    return f"{s:.3f}".rstrip("0").rstrip(".") + " s" if s < 10 else f"{s:.1f} s"


def render_svg(spans: Sequence[Span], title: str = "boot timeline") -> str:
    """The spans as one SVG document: a labelled time axis in seconds on top, one row
    per lane, each span a bar from its start to its end (an instant a mark) coloured by
    kind, with its label and length beside it. Labels are escaped; empty input gives
    an axis with no rows."""
    end = max((s.end for s in spans), default=0.0)
    total = max(end, 0.1)
    step = _tick_step(total)
    total = math.ceil(total / step - 1e-9) * step
    scale = AXIS_WIDTH / total
    lanes: list[str] = []
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        if s.lane not in lanes:
            lanes.append(s.lane)
    width = LEFT + AXIS_WIDTH + RIGHT
    height = TOP + ROW * len(lanes) + 30

    def x(t: float) -> float:
        return round(LEFT + t * scale, 2)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    # The axis: a tick, a grid line and a label every step.
    n = round(total / step)
    bottom = TOP + ROW * len(lanes)
    for i in range(n + 1):
        t = i * step
        out.append(f'<line x1="{x(t)}" y1="{TOP - 6}" x2="{x(t)}" y2="{bottom}" '
                   f'stroke="#dddddd"/>')
        out.append(f'<text x="{x(t)}" y="{TOP - 10}" text-anchor="middle" '
                   f'fill="#333333">{escape(_seconds(round(t, 6)))}</text>')
    out.append(f'<line x1="{LEFT}" y1="{TOP - 6}" x2="{x(total)}" y2="{TOP - 6}" '
               f'stroke="#333333"/>')
    for row, lane in enumerate(lanes):
        y = TOP + row * ROW
        if row % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{ROW}" '
                       f'fill="#f4f4f4" fill-opacity="0.6"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + ROW / 2 + 4}" text-anchor="end">'
                   f"{escape(_clip(lane, LANE_LABEL))}</text>")
    for s in spans:
        y = TOP + lanes.index(s.lane) * ROW + (ROW - BAR) / 2
        colour = KINDS[s.kind]
        tip = f"{s.label}: {_seconds(s.start)} to {_seconds(s.end)}"
        if s.end == s.start:
            out.append(f'<path d="M {x(s.start)} {y} l 5 {BAR / 2} l -5 {BAR / 2} '
                       f'l -5 {-BAR / 2} z" fill="{colour}"><title>{escape(tip)}</title>'
                       "</path>")
            text = s.label
        else:
            w = max(x(s.end) - x(s.start), 1.0)
            out.append(f'<rect x="{x(s.start)}" y="{y}" width="{round(w, 2)}" height="{BAR}" '
                       f'rx="2" fill="{colour}"><title>{escape(tip)}</title></rect>')
            text = f"{s.label} ({_seconds(s.end - s.start)})"
        out.append(f'<text x="{x(s.end) + 7}" y="{y + BAR - 3}" fill="#222222" '
                   f"data-lane={quoteattr(s.lane)}>{escape(text)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _clip(text: str, pixels: int) -> str:
    """At most as many characters as fit in ``pixels`` at the font size (about 7 px)."""
    n = pixels // 7
    return text if len(text) <= n else text[: n - 1] + "…"


# What the boot's console says, and what it means for the picture.
_STAMP = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\.(\d{3})\] (.*)$")
_TFTP_FILE = re.compile(r"^Filename '([^']*)'\.")
_TFTP_DONE = re.compile(r"^Bytes transferred = \d+")
_KERNEL = re.compile(r"Starting kernel|Linux version \d")
_INIT = re.compile(r"^embedbuild: init at (\d+\.\d+)")
_RUN_INIT = re.compile(r"Run /init as init process")
_UP = re.compile(r"^embedbuild: service (\S+) up: started (\d+\.\d+), ready (\d+\.\d+)")
_DOWN = re.compile(r"^embedbuild: service (\S+) did not come up: (.*) "
                   r"\(started (\d+\.\d+), gave up (\d+\.\d+)\)")
_DONE = re.compile(rf"^(?:{re.escape(READY_LINE)}|embedbuild: system up with failed services)")


def boot_spans(lines: Iterable[tuple[float, str]], power_on: float | None = None) -> list[Span]:
    """The spans of one boot, from its console lines as (seconds, text) on one host
    clock, and when the power came on on that clock (default: the first line). U-Boot
    runs from power-on to the kernel's start; each TFTP load from U-Boot's "Filename"
    line to its "Bytes transferred"; the kernel from its start to /init (the kernel's
    "Run /init" or, on a quiet console, /init's first line); /init from there to the
    ready line; each service from its start to ready (or to when the init gave up on
    it), its times the guest's uptime put on the host's clock at /init's first line.
    What the console did not show is left out."""
    lines = list(lines)
    if not lines:
        return []
    zero = lines[0][0] if power_on is None else power_on
    spans = [Span("power on", "power", 0.0, 0.0, "power")]
    kernel_at = init_at = None
    anchor: tuple[float, float] | None = None  # (host, guest) at /init's first line
    load: tuple[str, float] | None = None

    def on_host(guest: str) -> float:
        assert anchor is not None
        return anchor[0] + float(guest) - anchor[1]

    for when, text in lines:
        t = when - zero
        if kernel_at is None:
            if m := _TFTP_FILE.match(text):
                load = (m.group(1), t)
            elif load and _TFTP_DONE.match(text):
                spans.append(Span(f"tftp {load[0]}", f"TFTP {load[0]}", load[1], t, "load"))
                load = None
            elif _KERNEL.search(text):
                kernel_at = t
                spans.append(Span("U-Boot", "U-Boot", 0.0, t, "firmware"))
            continue
        m = _INIT.match(text)
        if init_at is None and (m or _RUN_INIT.search(text)):
            init_at = t
            spans.append(Span("kernel", "kernel", kernel_at, t, "kernel"))
        if m and anchor is None:
            anchor = (t, float(m.group(1)))
        elif anchor is not None and (m := _UP.match(text)):
            start, ready = on_host(m.group(2)), on_host(m.group(3))
            spans.append(Span(m.group(1), m.group(1), start, max(ready, start), "service"))
        elif anchor is not None and (m := _DOWN.match(text)):
            start, gave_up = on_host(m.group(3)), on_host(m.group(4))
            spans.append(Span(f"{m.group(1)}: {m.group(2)}", m.group(1), start,
                              max(gave_up, start), "failed"))
        elif init_at is not None and _DONE.match(text):
            spans.append(Span("/init", "/init", init_at, t, "init"))
            break
    return spans


def read_console_log(path: Path) -> list[tuple[float, str]]:
    """A bench's console.log as (seconds of the day, text) per line the board printed
    (lines embedbuild wrote, "> '...'", are left out); a day's wrap is carried over."""
    out: list[tuple[float, str]] = []
    day = 0.0
    for raw in path.read_text(errors="replace").splitlines():
        m = _STAMP.match(raw)
        if not m or m.group(5).startswith("> "):
            continue
        h, mi, s, ms = (int(g) for g in m.group(1, 2, 3, 4))
        t = h * 3600 + mi * 60 + s + ms / 1000 + day
        if out and t < out[-1][0] - 3600:  # past midnight
            day += 86400
            t += 86400
        out.append((t, m.group(5)))
    return out


def boot_timeline_svg(console_log: Path, power_on: float | None = None,
                      title: str = "boot timeline") -> str:
    """The timeline of the boot a console.log holds, as SVG. ``power_on`` is when the
    power came on on the log's clock: ``seconds_of_day(time.time())`` taken then;
    default: the log's first line."""
    return render_svg(boot_spans(read_console_log(console_log), power_on), title)


def seconds_of_day(wall: float) -> float:
    """time.time() as console.log's stamps count it (local time, seconds since
    midnight)."""
    import time

    lt = time.localtime(wall)
    return lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + wall % 1
