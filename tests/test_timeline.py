"""The boot timeline: spans from a real boot's console log (tests/data/console, a
qemu-arm-virt boot through U-Boot and TFTP), drawn as SVG that is well-formed XML,
escapes what it is given, and renders."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import ROOT

from embedbuild.timeline import (
    Span,
    boot_spans,
    boot_timeline_svg,
    read_console_log,
    render_svg,
    seconds_of_day,
)

LOG = ROOT / "tests" / "data" / "console" / "qemu-arm-virt-boot.log"
SVG = "{http://www.w3.org/2000/svg}"


def _spans() -> dict[str, Span]:
    return {s.lane: s for s in boot_spans(read_console_log(LOG))}


def test_spans_of_a_real_boot():
    spans = _spans()
    assert list(spans) == ["power", "TFTP zImage", "TFTP initramfs.cpio.gz", "U-Boot",
                           "kernel", "syslogd", "heartbeat", "dropbear", "/init"]
    # From the log's first line (power_on not given).
    assert spans["power"].start == spans["power"].end == 0.0
    assert spans["U-Boot"].start == 0.0
    # U-Boot's "Filename 'zImage'." at .225 to "Bytes transferred" at .385, the first
    # line at 55.641.
    assert spans["TFTP zImage"].start == pytest.approx(56.225 - 55.641)
    assert spans["TFTP zImage"].end == pytest.approx(56.385 - 55.641)
    # "Starting kernel" at 56.688, "Run /init" at 57.635, the ready line at 58.423.
    assert spans["U-Boot"].end == spans["kernel"].start == pytest.approx(56.688 - 55.641)
    assert spans["kernel"].end == spans["/init"].start == pytest.approx(57.635 - 55.641)
    assert spans["/init"].end == pytest.approx(58.423 - 55.641)
    # Services in the guest's uptime (init at 0.80, printed at 57.947): syslogd
    # started 0.94, ready 1.00.
    assert spans["syslogd"].start == pytest.approx(57.947 + 0.14 - 55.641)
    assert spans["syslogd"].end - spans["syslogd"].start == pytest.approx(0.06)
    assert spans["dropbear"].end - spans["dropbear"].start == pytest.approx(0.27)
    assert {s.kind for s in spans.values()} == {"power", "load", "firmware", "kernel",
                                                "service", "init"}


def test_power_on_before_the_first_line():
    lines = read_console_log(LOG)
    spans = {s.lane: s for s in boot_spans(lines, power_on=lines[0][0] - 0.05)}
    assert spans["U-Boot"].start == 0.0
    assert spans["kernel"].start == pytest.approx(56.688 - 55.641 + 0.05)


def test_a_service_that_failed_and_a_quiet_kernel():
    lines = [(10.0, "U-Boot 2023.01"), (10.5, "Starting kernel ..."),
             # quiet: no "Run /init", /init's own first line ends the kernel
             (11.0, "embedbuild: init at 0.50"),
             (11.2, "embedbuild: service web up: started 0.55, ready 0.70"),
             (11.3, "embedbuild: service db did not come up: exited with status 3 "
                    "(started 0.55, gave up 0.60)"),
             (11.4, "embedbuild: system up with failed services")]
    spans = {s.lane: s for s in boot_spans(lines, power_on=9.9)}
    assert spans["kernel"].start == pytest.approx(0.6)
    assert spans["kernel"].end == spans["/init"].start == pytest.approx(1.1)
    assert (spans["db"].kind, spans["db"].label) == ("failed", "db: exited with status 3")
    assert (spans["db"].start, spans["db"].end) == (pytest.approx(1.15), pytest.approx(1.2))
    assert spans["web"].end == pytest.approx(1.3) and spans["/init"].end == pytest.approx(1.5)


def test_svg_is_well_formed_and_escapes_labels():
    spans = [Span("power on", "power", 0, 0, "power"),
             Span("<script>alert('x')</script> & \"q\"", "a<b>&\"lane\"", 0.1, 0.4, "service"),
             Span("tftp a'b", "TFTP", 0.2, 0.25, "load")]
    svg = render_svg(spans, title="t <&>")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "<script>alert('x')</script> & \"q\" (0.3 s)" in texts
    assert "a<b>&\"lane\"" in texts and "t <&>" in texts
    assert "<script>" not in svg
    # One axis label every tick, from 0 s.
    assert {"0 s", "0.1 s", "0.2 s", "0.3 s", "0.4 s"} <= set(texts)


def test_empty_and_bad_spans():
    ET.fromstring(render_svg([]))
    with pytest.raises(ValueError, match="ends"):
        Span("x", "x", 1.0, 0.5, "service")
    with pytest.raises(ValueError, match="unknown kind"):
        Span("x", "x", 0.0, 0.5, "nope")
    with pytest.raises(ValueError, match="finite"):
        Span("x", "x", 0.0, float("nan"), "service")


def test_seconds_of_day_is_the_logs_clock():
    import time

    now = time.time()
    stamp = f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d}"
    h, m, s = stamp.split(":")
    assert seconds_of_day(now) == pytest.approx(int(h) * 3600 + int(m) * 60 + float(s),
                                                abs=0.002)


@pytest.mark.skipif(shutil.which("rsvg-convert") is None,
                    reason="rsvg-convert is not installed (tools/setup installs librsvg2-bin)")
def test_renders_to_png(tmp_path: Path):
    svg = tmp_path / "boot.svg"
    svg.write_text(boot_timeline_svg(LOG, title="qemu-arm-virt boot"))
    png = tmp_path / "boot.png"
    r = subprocess.run(["rsvg-convert", str(svg), "-o", str(png)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and not r.stderr, r.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    root = ET.fromstring(svg.read_text())
    assert (width, height) == (int(root.get("width")), int(root.get("height")))
