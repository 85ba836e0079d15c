"""The one console layer: a pyserial port for every board, QEMU's pty included.

Everything read is logged with timestamps; ``expect`` waits for patterns with a
timeout; writes are paced (chunk size and delay per board) because most board
UARTs have no flow control.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import EmbedbuildError

CLOSED_AFTER = 0.5  # seconds of read errors before the console counts as closed


class ConsoleError(EmbedbuildError):
    """The console timed out, closed, or showed a failure."""


@dataclass
class Match:
    """What expect found: which pattern, the match, and the text before it."""

    index: int
    match: re.Match
    before: str


class Console:
    """A serial console on a device path or any pyserial URL.

    Args:
        port: /dev/ttyUSB0, /dev/pts/N, or a pyserial URL (rfc2217://, socket://, loop://).
        baud: line speed.
        log: file that receives everything read (and written), timestamped per line.
        chunk: bytes written at once (0: whole lines).
        delay: seconds between chunks.
    """

    def __init__(
        self,
        port: str,
        baud: int = 115200,
        log: Path | None = None,
        chunk: int = 0,
        delay: float = 0.0,
    ) -> None:
        import serial

        try:
            self.ser = serial.serial_for_url(port, baudrate=baud, timeout=0.05)
        except (serial.SerialException, OSError) as e:
            raise ConsoleError(
                f"cannot open console {port}: {e}",
                hint="check the device path and that nothing else holds it",
            ) from None
        self.port = port
        self.chunk = chunk
        self.delay = delay
        self._buf = ""
        self._pos = 0  # everything before _pos has been consumed by expect
        self._cond = threading.Condition()
        self._closed = False
        self._log = open(log, "a", buffering=1) if log else None  # noqa: SIM115
        self._line_start = True
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # -- reading -------------------------------------------------------------

    def _read_loop(self) -> None:
        failing_since = None
        while not self._closed:
            try:
                # One byte, then what is waiting: pyserial drops the bytes a
                # read() had gathered when it raises, so never gather across waits.
                data = self.ser.read(1)
                if data and (waiting := self.ser.in_waiting):
                    data += self.ser.read(waiting)
                failing_since = None
            except Exception:
                # A pty reports a transient hang-up when the guest reopens its
                # tty; only an error that lasts means the other end is gone
                # (QEMU exited, USB adapter unplugged).
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since < CLOSED_AFTER:
                    time.sleep(0.02)
                    continue
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            if not data:
                continue
            text = data.decode(errors="replace").replace("\r\n", "\n").replace("\r", "")
            self._write_log(text, "")
            with self._cond:
                self._buf += text
                self._cond.notify_all()

    def _write_log(self, text: str, prefix: str) -> None:
        if not self._log:
            return
        out = []
        for piece in text.splitlines(keepends=True):
            if self._line_start:
                out.append(
                    f"[{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d}] {prefix}"
                )
            out.append(piece)
            self._line_start = piece.endswith("\n")
        self._log.write("".join(out))

    def mark(self) -> int:
        """A position in everything read, for ``expect(since=...)``."""
        with self._cond:
            return len(self._buf)

    def expect(self, patterns: str | Sequence[str], timeout: float,
               since: int | None = None) -> Match:
        """Wait until one of the regexes appears in what was not consumed yet (or in
        everything read after the mark ``since``, consumed or not).

        Consumes up to the end of the match. Raises ConsoleError on timeout or
        when the console closes, with the tail of what was read.
        """
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        regs = [re.compile(p, re.M) for p in pats]
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                best = None
                start = self._pos if since is None else since
                for i, r in enumerate(regs):
                    m = r.search(self._buf, start)
                    if m and (best is None or m.start() < best[1].start()):
                        best = (i, m)
                if best:
                    i, m = best
                    before = self._buf[start : m.start()]
                    self._pos = max(self._pos, m.end())
                    return Match(i, m, before)
                left = deadline - time.monotonic()
                if self._closed:
                    raise ConsoleError(
                        f"console closed while waiting for {pats}", log_tail=self.tail()
                    )
                if left <= 0:
                    raise ConsoleError(
                        f"timed out after {timeout:.0f} s waiting for {pats}", log_tail=self.tail()
                    )
                self._cond.wait(min(left, 0.5))

    def drain(self) -> str:
        """Consume and return everything read so far."""
        with self._cond:
            text = self._buf[self._pos :]
            self._pos = len(self._buf)
            return text

    def tail(self, lines: int = 25) -> str:
        """The last lines read."""
        return "\n".join(self._buf.splitlines()[-lines:])

    @property
    def text(self) -> str:
        """Everything read since the console was opened."""
        return self._buf

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writing -------------------------------------------------------------

    def write(self, text: str) -> None:
        """Write text, paced in chunks when the board needs it."""
        data = text.encode()
        step = self.chunk or len(data) or 1
        for i in range(0, len(data), step):
            self.ser.write(data[i : i + step])
            self.ser.flush()
            if self.delay and i + step < len(data):
                time.sleep(self.delay)

    def sendline(self, line: str, echo_timeout: float | None = 5.0) -> None:
        """Send a line. Unless echo_timeout is None, its echo is awaited before the
        newline, so a garbled line is caught before it runs."""
        self.write(line)
        if echo_timeout is not None:
            self.expect(re.escape(line), echo_timeout)
        self.write("\n")

    def interact(self, quit_key: str = "\x1d") -> None:
        """Hand the console to the user until quit_key (Ctrl-]) is typed."""
        import os
        import select
        import sys
        import termios
        import tty

        out = sys.stdout
        out.write(self.drain())
        out.flush()
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if os.isatty(fd) else None
        try:
            if saved:
                tty.setraw(fd)
            seen = len(self._buf)
            while not self._closed:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if ready:
                    data = os.read(fd, 1024).decode(errors="replace")
                    if not data or quit_key in data:
                        break
                    self.write(data)
                with self._cond:
                    new, seen = self._buf[seen:], len(self._buf)
                if new:
                    out.write(new.replace("\n", "\r\n") if saved else new)
                    out.flush()
        finally:
            if saved:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with contextlib.suppress(Exception):
            self.ser.close()
        if self._log:
            self._log.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
