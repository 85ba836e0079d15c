"""The one console layer: a pyserial port for every board, QEMU's pty included.

Everything read and written is logged with timestamps; ``expect`` waits for
patterns with a timeout; writes are paced (chunk size and delay per board)
because most board UARTs have no flow control, and time out when the device
stops reading. Only a bounded window of what was read stays in memory (the log
file has it all); positions (``mark``, ``expect(since=...)``) count from the
opening of the console, whatever was dropped since.
"""

from __future__ import annotations

import codecs
import contextlib
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.protocol import ConsoleProtocol, Match

CLOSED_AFTER = 0.5  # seconds of read errors before the console counts as closed
WINDOW = 1 << 20  # characters of history kept in memory
# A search while waiting starts this far before where the last one ended: exact
# for every match shorter than this (a kernel line is at most 1 KiB), and each
# read costs the same however much is kept.
OVERLAP = 4096
WRITE_TIMEOUT = 10.0  # seconds a write may wait for a device that does not read
TAIL_CHARS = 1 << 16  # how far back tail() looks for its lines


def log_stamp(wall: float) -> str:
    """console.log's stamp for the wall time ``wall`` (local time of day, milliseconds),
    from one reading of the clock: the seconds and their fraction read apart would be a
    second off whenever a second ends between the two reads."""
    return f"[{time.strftime('%H:%M:%S', time.localtime(wall))}.{int(wall * 1000) % 1000:03d}] "


def serial_url(port: str) -> str:
    """What pyserial opens for ``port``. An RFC 2217 server is not waited on to confirm
    the modem lines (DTR, RTS) pyserial sets at open: the console uses none, and a server
    whose port cannot set them (ser2net on a pty, as for a QEMU board) never confirms."""
    if port.startswith("rfc2217://") and "ign_set_control" not in port:
        return port + ("&" if "?" in port else "?") + "ign_set_control"
    return port


class ConsoleError(EmbedbuildError):
    """The console timed out, closed, or showed a failure."""


class Console(ConsoleProtocol):
    """A serial console on a device path or any pyserial URL.

    Args:
        port: /dev/ttyUSB0, /dev/pts/N, or a pyserial URL (rfc2217://, socket://, loop://).
        baud: line speed.
        log: file that receives everything read and written, timestamped per line.
        chunk: bytes written at once (0: whole lines).
        delay: seconds between chunks.
        write_timeout: seconds a write may block on a device that stopped reading.
        window: characters of history kept in memory (at least; up to 1.5 times that).
    """

    def __init__(
        self,
        port: str,
        baud: int = 115200,
        log: Path | None = None,
        chunk: int = 0,
        delay: float = 0.0,
        *,
        write_timeout: float = WRITE_TIMEOUT,
        window: int = WINDOW,
    ) -> None:
        import serial

        # pyserial's RFC 2217 client refuses a write timeout; its socket bounds every
        # write by itself (5 s), so a stalled server fails a write there too.
        bound = None if port.startswith("rfc2217://") else write_timeout
        try:
            self.ser = serial.serial_for_url(
                serial_url(port), baudrate=baud, timeout=0.05, write_timeout=bound
            )
        except (serial.SerialException, OSError) as e:
            raise ConsoleError(
                f"cannot open console {port}: {e}",
                hint="check the device path and that nothing else holds it",
            ) from None
        self.port = port
        self.baud = baud
        self.chunk = chunk
        self.delay = delay
        self.write_timeout = write_timeout
        self.window = window
        # History: _buf holds the text from absolute position _start on, then the
        # pieces in _parts (appended in O(1), joined when someone looks).
        self._buf = ""
        self._start = 0
        self._parts: list[str] = []
        self._parts_len = 0
        self._pos = 0  # absolute; everything before it has been consumed by expect
        self._cond = threading.Condition()
        self._closed = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._log: TextIO | None = open(log, "a", buffering=1) if log else None  # noqa: SIM115
        self._log_lock = threading.Lock()  # reader, writers and close() share the file
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
                if self._closed:
                    return
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
            # Incremental: a UTF-8 character split across two reads stays whole.
            text = self._decoder.decode(data).replace("\r\n", "\n").replace("\r", "")
            if not text:
                continue
            self._write_log(text)
            with self._cond:
                self._parts.append(text)
                self._parts_len += len(text)
                if self._parts_len > self.window // 2:
                    self._compact()
                self._cond.notify_all()

    def _compact(self) -> str:
        """Join the pending pieces into the window and drop what is beyond it; caller
        holds the lock. Costs O(window) once per window/2 characters read."""
        if self._parts:
            self._buf += "".join(self._parts)
            self._parts.clear()
            self._parts_len = 0
        if len(self._buf) > self.window:
            cut = len(self._buf) - self.window
            self._buf = self._buf[cut:]
            self._start += cut
        return self._buf

    def _write_log(self, text: str, written: bool = False) -> None:
        with self._log_lock:
            if self._log is None:
                return
            stamp = log_stamp(time.time())
            if written:
                # On a line of its own, escaped, so it reads apart from the device's echo.
                lead = "" if self._line_start else "\n"
                self._log.write(f"{lead}{stamp}> {text!r}\n")
                self._line_start = True
                return
            # One stamp per line begun; a single replace keeps a chatty device cheap.
            body = text.replace("\n", "\n" + stamp)
            if text.endswith("\n"):
                body = body[: -len(stamp)]
            self._log.write((stamp if self._line_start else "") + body)
            self._line_start = text.endswith("\n")

    def _end(self) -> int:
        return self._start + len(self._buf) + self._parts_len

    def mark(self) -> int:
        """A position in everything read, for ``expect(since=...)``."""
        with self._cond:
            return self._end()

    def expect(self, patterns: str | Sequence[str], timeout: float,
               since: int | None = None) -> Match:
        """Wait until one of the regexes appears in what was not consumed yet (or in
        everything read after the mark ``since``, consumed or not).

        Consumes up to the end of the match. Raises ConsoleError on timeout or
        when the console closes, with the tail of what was read. Text that has
        left the window (see ``window``) is not searched. While waiting, each
        search covers what came since the last one plus the OVERLAP characters
        before: a match longer than that is not found once its start is older.
        """
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        regs = [re.compile(p, re.M) for p in pats]
        deadline = time.monotonic() + timeout
        with self._cond:
            start = max(self._pos if since is None else since, self._start)
            # text: what is searched, from absolute position base; skip: where to begin.
            base, text, skip = start, self._text_from(start), 0
            while True:
                best = None
                for i, r in enumerate(regs):
                    m = r.search(text, skip)
                    if m and (best is None or m.start() < best[1].start()):
                        best = (i, m)
                if best:
                    i, m = best
                    first = max(start, self._start)
                    before = (text[first - base : m.start()] if first >= base
                              else self._text_from(first)[: base + m.start() - first])
                    self._pos = max(self._pos, base + m.end())
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
                end = base + len(text)
                if end < self._start:  # the reader got a whole window ahead: go on from there
                    base, text, skip = self._start, self._text_from(self._start), 0
                    continue
                # Keep OVERLAP characters and one more, so ^ and \b see what precedes.
                keep = max(len(text) - OVERLAP - 1, 0)
                if keep:
                    skip = 1
                base, text = base + keep, text[keep:] + self._text_from(end)

    def _text_from(self, pos: int) -> str:
        """The text from absolute position pos (or the window's start) to the end; costs
        O(length returned), plus the pending pieces when pos is in the joined part."""
        pos = max(pos, self._start)
        joined_end = self._start + len(self._buf)
        if pos < joined_end:
            return self._buf[pos - self._start :] + "".join(self._parts)
        out, at = [], self._end()
        for piece in reversed(self._parts):  # the newest pieces are the ones wanted
            if at <= pos:
                break
            at -= len(piece)
            out.append(piece[pos - at :] if at < pos else piece)
        return "".join(reversed(out))

    def drain(self) -> str:
        """Consume and return everything read so far."""
        with self._cond:
            text, self._pos = self._text_from(self._pos), self._end()
            return text

    def tail(self, lines: int = 25) -> str:
        """The last lines read."""
        with self._cond:
            recent = self._compact()[-TAIL_CHARS:]
        return "\n".join(recent.splitlines()[-lines:])

    @property
    def text(self) -> str:
        """What was read, as far back as the window reaches (the log has all of it)."""
        with self._cond:
            return self._compact()

    def since(self, mark: int) -> str:
        """What was read after a ``mark()`` (from the window's start if it is older);
        consumes nothing."""
        with self._cond:
            return self._text_from(mark)

    @property
    def closed(self) -> bool:
        """True once the console was closed or its device went away."""
        return self._closed

    # -- writing -------------------------------------------------------------

    def write(self, text: str) -> None:
        """Write text, paced in chunks when the board needs it. Raises ConsoleError if
        the device stops reading for ``write_timeout`` seconds."""
        import serial

        self._write_log(text, written=True)
        data = text.encode()
        step = self.chunk or len(data) or 1
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            try:
                self.ser.write(piece)
            except serial.SerialTimeoutException:
                raise ConsoleError(
                    f"the device on {self.port} stopped reading: a write waited "
                    f"{self.write_timeout:.0f} s", log_tail=self.tail()
                ) from None
            except (serial.SerialException, OSError) as e:
                raise ConsoleError(f"cannot write to {self.port}: {e}",
                                   log_tail=self.tail()) from None
            if self.delay and i + step < len(data):
                # The chunk's time on the wire plus the pause: no tcdrain, which
                # can block forever on a port whose other end stopped.
                time.sleep(self.delay + 10 * len(piece) / self.baud)

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
            seen = self.mark()
            while not self._closed:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if ready:
                    data = os.read(fd, 1024).decode(errors="replace")
                    if not data or quit_key in data:
                        break
                    self.write(data)
                with self._cond:
                    new, seen = self._text_from(seen), self._end()
                if new:
                    out.write(new.replace("\n", "\r\n") if saved else new)
                    out.flush()
        finally:
            if saved:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def close(self) -> None:
        """Stop reading, close the port and then the log (the reader is done with it)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with contextlib.suppress(Exception):  # not every pyserial backend can cancel
            self.ser.cancel_read()
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=2)
        with contextlib.suppress(Exception):  # a vanished device may fail to close: it is gone
            self.ser.close()
        with self._log_lock:
            if self._log:
                self._log.close()
                self._log = None

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
