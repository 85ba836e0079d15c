"""The console against fake devices on a pty: bounded memory, writes that cannot
block forever, UTF-8 across reads, a clean close, and writes in the log."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from fakes import FakeDevice

from embedbuild.rig.console import WINDOW, ConsoleError
from embedbuild.rig.uboot import KERNEL_ERRORS


class Script(FakeDevice):
    """Sends the given pieces with pauses between them, then reads and discards."""

    def __init__(self, *pieces: bytes, pause: float = 0.05) -> None:
        super().__init__()
        self.pieces = pieces
        self.pause = pause

    def run(self) -> None:
        for p in self.pieces:
            self.send(p)
            self.sleep(self.pause)
        super().run()


class Deaf(FakeDevice):
    """A device that stopped reading."""

    def run(self) -> None:
        self.sleep(3600)


class Chatty(FakeDevice):
    """Sends ``total`` bytes of lines as fast as the pty takes them, then one last line."""

    LINE = b"[  1.000000] chatty: " + b"x" * 57 + b"\r\n"  # 80 bytes

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.done = threading.Event()

    def run(self) -> None:
        block = self.LINE * 800  # 64000 bytes
        for _ in range(self.total // len(block)):
            self.send(block)
        self.send(b"the end\r\n")
        self.done.set()
        super().run()


def test_expect_consumes_and_since_sees_again():
    with Script(b"one\r\ntwo\r\nthree\r\n") as dev, dev.console() as c:
        # Position 0, the first character read: a mark() taken here may already lie
        # after "one" (the device talks as soon as it is opened).
        start = 0
        assert c.expect("two", 5).before == "one\n"
        assert c.expect(["nothing", r"thr(ee)"], 5).match.group(1) == "ee"
        again = c.expect("one", 1, since=start)
        assert again.before == ""
        assert c.since(start + 4) == "two\nthree\n"
        assert not c.closed
        with pytest.raises(ConsoleError, match="timed out"):
            c.expect("four", 0.3)
    assert c.closed


class Vanishing(FakeDevice):
    """Says one line, then goes away (QEMU exits, the USB adapter is unplugged)."""

    def run(self) -> None:
        self.send(b"bye\r\n")
        self.sleep(0.1)
        fd, self.master = self.master, -1  # so close() cannot close a reused number
        os.close(fd)


def test_device_gone_ends_a_wait_early():
    with Vanishing() as dev, dev.console() as c:
        t0 = time.monotonic()
        with pytest.raises(ConsoleError, match="console closed"):
            c.expect("never", 60)
        assert time.monotonic() - t0 < 30 and c.closed


def test_utf8_split_across_reads_stays_whole():
    # "é" is c3 a9 and "€" e2 82 ac: each cut between two writes with a pause.
    with Script(b"caf\xc3", b"\xa9 5 \xe2\x82", b"\xac\r\n", pause=0.2) as dev, \
            dev.console() as c:
        c.expect("\n", 5)
        assert "café 5 €" in c.text
        assert "\ufffd" not in c.text


def test_stalled_device_write_times_out():
    with Deaf() as dev, dev.console(write_timeout=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(ConsoleError, match="stopped reading"):
            c.write("x" * (4 << 20))  # far more than a pty holds
        assert time.monotonic() - t0 < 30  # bounded, not a speed claim


def test_log_has_reads_and_writes(tmp_path: Path):
    log = tmp_path / "console.log"
    with Script(b"U-Boot 2023.01\r\n=> ") as dev, dev.console(log=log) as c:
        c.expect("=> ", 5)
        c.sendline("version", echo_timeout=None)
        deadline = time.monotonic() + 5
        while b"version\n" not in dev.received and time.monotonic() < deadline:
            time.sleep(0.01)
    text = log.read_text()
    assert "U-Boot 2023.01" in text
    assert "> 'version'" in text and "> '\\n'" in text
    # every line starts with a timestamp
    assert all(line.startswith("[") for line in text.splitlines())


def test_close_while_reading_is_clean(tmp_path: Path, monkeypatch):
    errors = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    for i in range(30):
        with Chatty(1 << 30) as dev:
            c = dev.console(log=tmp_path / f"{i}.log")
            c.expect("chatty", 5)
            c.close()
            assert not c._reader.is_alive()
    assert errors == []


def test_positions_stay_absolute_when_the_window_moves():
    with Chatty(4 << 20) as dev, dev.console(window=1 << 16) as c:
        first = c.mark()
        c.expect("the end", 60)
        end = c.mark()
        assert end - first > 4_000_000  # positions count everything read
        assert len(c.text) <= (1 << 16) * 3 // 2
        # a mark inside the window still works; one before it searches the window
        assert c.expect("the end", 1, since=end - 20).before == "x" * 11 + "\n"
        assert c.expect("chatty", 1, since=first).match
        assert c.tail(3).splitlines()[-1] == "the end"
        assert c.since(first) == c.text  # older than the window: from its start


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_16_mib_read_with_bounded_memory(tmp_path: Path):
    """A flood while a boot waits for its ready line: memory stays bounded (the
    speed is printed, not asserted: the machine may be busy). 16 times the window is
    enough to tell a bounded console from one that keeps it all."""
    total = 16 << 20
    halfway: list[float] = []
    peak = [0]
    rss0 = _rss()
    with Chatty(total) as dev, dev.console(log=tmp_path / "console.log") as c:
        t0 = time.monotonic()

        def watch() -> None:
            while not dev.done.is_set():
                peak[0] = max(peak[0], _rss() - rss0)
                if not halfway and c.mark() >= total // 2:
                    halfway.append(time.monotonic() - t0)
                time.sleep(0.01)

        threading.Thread(target=watch, daemon=True).start()
        c.expect(["the end", *KERNEL_ERRORS], 120)
        seconds = time.monotonic() - t0
        kept = len(c.text)
    print(f"{total >> 20} MiB in {seconds:.1f} s ({total / 2**20 / seconds:.1f} MiB/s; first half "
          f"{halfway[0]:.1f} s, second {seconds - halfway[0]:.1f} s); "
          f"window {kept / 2**20:.2f} Mi chars, peak RSS growth {peak[0] / 2**20:.1f} MiB")
    assert kept <= WINDOW * 3 // 2
    # The old console held all of it (and copied it per read): over 16 MiB here.
    assert peak[0] < total // 2
    assert (tmp_path / "console.log").stat().st_size > total  # the log has it all


@pytest.mark.parametrize("frac", [0.0, 0.0004, 0.4996, 0.9994, 0.9999])
def test_a_log_stamp_is_the_wall_time_it_was_given(frac: float):
    """A stamp's seconds and milliseconds come from one reading of the clock: read
    apart, a second that ended between the two reads gave a stamp a second early (and
    the boot timeline a line out of order). The boot timeline reads the stamps back."""
    from embedbuild.rig.console import log_stamp
    from embedbuild.timeline import seconds_of_day

    wall = 1_700_000_000 + frac
    stamp = log_stamp(wall)
    h, m, s = (int(v) for v in stamp[1:9].split(":"))
    assert stamp[9] == "." and stamp.endswith("] ")
    stamped = h * 3600 + m * 60 + s + int(stamp[10:13]) / 1000
    assert 0 <= seconds_of_day(wall) - stamped < 0.001, stamp
