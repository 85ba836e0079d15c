"""Reading bytes from outside, bounded: a byte limit, a total deadline, and for JSON a
nesting limit, checked as the bytes arrive, never after.

Everything embedbuild fetches from a network or a shared folder goes through here: a
binary cache's descriptions and archives, and source archives from substituters. A
location is an http(s) URL or a path. A path is opened without following a symlink
as its last component and must be a regular file (checked on the open descriptor, so
a FIFO or a device never stalls or floods the reader). An HTTP transfer is watched by
a thread that shuts its socket down when the deadline passes, so a server that sends a
byte a second (in its headers as much as in its body) costs the deadline, not more. A
deadline may also ask for a minimum average rate after a grace period (Deadline's
min_rate), so that a large download at a fair rate gets its time and a trickle does not.

Every failure is a FetchError subclass naming the location: Unreachable, Missing,
NotAFile, TooLarge, TooSlow, Truncated, Mismatch, Malformed. On any failure the
partial file is removed. For example, a source archive whose lock gives its size and
sha256, from a substituter (a URL or a folder)::

    deadline = Deadline(600, "the deadline for linux-6.1's source")
    fetch(f"{substituter}/sources/{sha256}", dest, limit=size, exact=True,
          sha256=sha256, deadline=deadline, progress=show)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from embedbuild.errors import EmbedbuildError

DEFAULT_TIMEOUT = 5.0  # seconds to connect, and for each read: a silent peer
CHUNK = 1 << 16
# JSON nested deeper than this is refused (descriptions nest about 6 deep).
MAX_DEPTH = 64


class FetchError(EmbedbuildError):
    """Something fetched from outside is not usable; ``where`` names the location."""


class Unreachable(FetchError):
    """The location cannot be reached or stopped answering (refused, reset, silent)."""


class Missing(FetchError):
    """The location does not hold the file (HTTP 404/410, no such file)."""


class NotAFile(FetchError):
    """A path names a symlink, folder, device or FIFO instead of a regular file."""


class TooLarge(FetchError):
    """More bytes than the limit (announced, or as they arrived)."""


class TooSlow(FetchError):
    """Not complete by the deadline."""


class Truncated(FetchError):
    """Fewer bytes than the exact size expected."""


class Mismatch(FetchError):
    """The bytes' sha256 is not the one expected."""


class Malformed(FetchError):
    """Bytes that do not parse as what they should be (JSON, too deeply nested)."""


class Deadline:
    """A moment (monotonic clock) by which something must be done.

    Args:
        seconds: the most it may take, from now.
        what: what it bounds, for messages ("the deadline for one item").
        parent: an outer deadline that may come sooner (an item's within a build's).
        min_rate: bytes a second it must keep up on average once ``grace`` seconds
            have passed (0: no such rule). Then the time allowed is ``grace`` plus a
            second for every ``min_rate`` bytes that arrived (reported with arrived()),
            and never more than ``seconds``: a source sending a byte a second is cut
            off after the grace, a large download at a fair rate gets the time it needs.
        grace: see min_rate.
    """

    def __init__(self, seconds: float, what: str = "the deadline",
                 parent: Deadline | None = None, *, min_rate: float = 0,
                 grace: float = 0) -> None:
        self.seconds = seconds
        self.what = what
        self.parent = parent
        self.min_rate = min_rate
        self.grace = grace
        self.start = time.monotonic()
        self.received = 0

    def arrived(self, n: int) -> None:
        """n more bytes arrived (they extend a min_rate deadline)."""
        self.received += n

    def _cap(self) -> float:
        return self.start + self.seconds

    def _rate_limit(self) -> float | None:
        if not self.min_rate:
            return None
        return self.start + self.grace + self.received / self.min_rate

    def at(self) -> float:
        """When this deadline (not counting its parents) passes, as things stand."""
        rate = self._rate_limit()
        return self._cap() if rate is None else min(self._cap(), rate)

    def binding(self) -> Deadline:
        """The deadline that comes first: this one or one of its parents."""
        d = self.parent.binding() if self.parent is not None else None
        return d if d is not None and d.at() < self.at() else self

    def left(self) -> float:
        """Seconds left (negative once passed)."""
        return self.binding().at() - time.monotonic()

    def passed(self) -> bool:
        """True once the deadline (or a parent's) has passed."""
        return self.left() <= 0

    def overdue(self) -> str:
        """Why the deadline that binds has passed, in words: 'not complete within the
        deadline for one item (600 s)', or for a rate too low, what arrived in how long."""
        d = self.binding()
        rate = d._rate_limit()
        spent = time.monotonic() - d.start
        if rate is not None and rate < d._cap():
            return (f"slower than {_rate(d.min_rate)} after the first {d.grace:g} s: "
                    f"{d.received:,} bytes in {spent:.1f} s")
        return f"not complete within {d.what} ({d.seconds:g} s): {d.received:,} bytes arrived"


def _rate(bps: float) -> str:
    return f"{bps / 1024:g} KiB/s" if bps >= 1024 else f"{bps:g} bytes/s"


class Readable(Protocol):
    """What copy_bounded reads from: a binary stream."""

    def read(self, n: int = -1, /) -> bytes: ...


def _human(n: int) -> str:
    return f"{n:,} bytes"


def _open_file(path: Path, where: str, follow_symlinks: bool = False) -> tuple[Readable, int]:
    """A regular file opened (without following a final symlink, unless asked) and its
    size."""
    nofollow = 0 if follow_symlinks else os.O_NOFOLLOW
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; cleared once it is
        # known to be a regular file (where it changes nothing anyway).
        fd = os.open(path, os.O_RDONLY | nofollow | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Missing("no such file", where=where) from None
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise NotAFile("a symlink, not a regular file (not followed)", where=where) from None
        if e.errno == errno.ENOTDIR:
            raise Missing("no such file", where=where) from None
        raise Unreachable(f"cannot open it: {e.strerror}", where=where) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = {stat.S_IFDIR: "a folder", stat.S_IFCHR: "a character device",
                    stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
                    stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(st.st_mode), "not a file")
            raise NotAFile(f"{kind}, not a regular file", where=where)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0), st.st_size
    except BaseException:
        os.close(fd)
        raise


class _Watch:
    """The sockets of one HTTP transfer, shut down by a watcher thread once the deadline
    passes (it may move while bytes arrive): a read blocked on them returns at once,
    whatever the server does."""

    def __init__(self, deadline: Deadline) -> None:
        self.socks: list[socket.socket] = []
        self.expired = False
        self.lock = threading.Lock()
        self.deadline = deadline
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # Checked at least four times a second: a deadline can only move later.
        while not self.done.wait(min(max(self.deadline.left(), 0.0), 0.25)):
            if self.deadline.passed():
                self.expire()
                return

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            self.socks.append(sock)
            if self.expired:
                self._shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for s in self.socks:
                self._shut(s)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _handlers(watch: _Watch) -> list[urllib.request.BaseHandler]:
    """http and https only (no file:, ftp: or data: even after a redirect), every
    connection registered with the watch, at most 4 redirects."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            watch.add(self.sock)

    class TlsConn(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            watch.add(self.sock)

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(Conn, req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(TlsConn, req, context=self._context)

    class Redirects(urllib.request.HTTPRedirectHandler):
        max_redirections = 4

    return [urllib.request.ProxyHandler(), Http(), Https(),
            urllib.request.HTTPDefaultErrorHandler(), Redirects(),
            urllib.request.HTTPErrorProcessor()]


def why(e: BaseException) -> str:
    """A network failure in words."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    if isinstance(e, TimeoutError | socket.timeout):
        return "no answer (timed out)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is it down?)"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, http.client.HTTPException | ValueError):
        return f"{e.__class__.__name__}: {e}"
    return str(e) or e.__class__.__name__


# What talking to a server can raise: refused, reset, timed out, a malformed answer
# (http.client.HTTPException) or a URL it cannot even send (InvalidURL, a ValueError).
NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, ValueError)


def is_url(location: str | Path) -> bool:
    """True for an http(s) URL, False for a path."""
    return isinstance(location, str) and location.startswith(("http://", "https://"))


@contextlib.contextmanager
def open_location(location: str | Path, *, deadline: Deadline,
                  timeout: float = DEFAULT_TIMEOUT,
                  method: str = "GET") -> Iterator[tuple[Readable, int | None]]:
    """Open an http(s) URL or a path for reading: (stream, announced size or None).

    Raises Missing, NotAFile, Unreachable or TooSlow (the deadline passed while
    connecting or reading the headers)."""
    where = str(location)
    if not is_url(location):
        if isinstance(location, str) and "://" in location:
            raise Unreachable("only http://, https:// and folders are read", where=where)
        stream, size = _open_file(Path(location), where)
        with stream:
            yield stream, size
        return
    if deadline.passed():
        raise TooSlow(f"not begun: {deadline.overdue()}", where=where)
    watch = _Watch(deadline)
    opener = urllib.request.OpenerDirector()
    for h in _handlers(watch):
        opener.add_handler(h)
    watch.start()
    try:
        try:
            # The socket's timeout is the per-read one; the deadline is the watch's.
            resp = opener.open(urllib.request.Request(location, method=method),
                               timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (404, 410):
                raise Missing(f"not there (HTTP {e.code})", where=where) from None
            raise Unreachable(why(e), where=where) from None
        except NETWORK_ERRORS as e:
            # Past the deadline, whatever failed failed for lack of time (a read that
            # timed out just before the watch ran included).
            if watch.expired or deadline.passed():
                raise TooSlow(f"no complete answer: {deadline.overdue()}",
                              where=where) from None
            raise Unreachable(why(e), where=where) from None
        with resp:
            yield _HttpStream(resp, watch, deadline, where), resp.length
    finally:
        watch.stop()


class _HttpStream:
    """An HTTP body: read1 (one receive at most, so a slow server cannot hold a read
    until a whole chunk gathers), network failures as FetchErrors."""

    def __init__(self, resp, watch: _Watch, deadline: Deadline, where: str) -> None:
        self.resp, self.watch, self.deadline, self.where = resp, watch, deadline, where

    def read(self, n: int = -1, /) -> bytes:
        try:
            data = self.resp.read1(n)
        except NETWORK_ERRORS as e:
            if self.watch.expired or self.deadline.passed():
                raise TooSlow(self.deadline.overdue(), where=self.where) from None
            raise Unreachable(why(e), where=self.where) from None
        if not data and self.watch.expired:  # the watch's shutdown, not the body's end
            raise TooSlow(self.deadline.overdue(), where=self.where)
        return data


def copy_bounded(open_source: Callable[[], contextlib.AbstractContextManager],
                 dest: Path, *, limit: int, deadline: Deadline, exact: bool = False,
                 sha256: str | None = None, progress: Callable[[int], None] | None = None,
                 where: str = "") -> int:
    """Copy what ``open_source()`` opens into dest (created or replaced), reading at most
    ``limit`` bytes and finishing by ``deadline``; returns the bytes copied.

    ``open_source()`` is a context manager yielding a stream (``read(n)``), or a pair
    (stream, announced size or None): an announced size over the limit fails before a
    byte is read. With ``exact``, fewer than ``limit`` bytes is Truncated; with
    ``sha256``, other bytes are a Mismatch. ``progress(bytes so far)`` is called as
    bytes arrive. On any failure dest is removed and a FetchError raised (TooLarge,
    TooSlow, Truncated, Mismatch, or what opening raised); an OSError writing dest is
    raised as it is (this machine's problem, not the source's)."""
    h = hashlib.sha256() if sha256 else None
    done = 0
    try:
        with open_source() as opened, open(dest, "wb") as out:
            stream, announced = opened if isinstance(opened, tuple) else (opened, None)
            if announced is not None and announced > limit:
                raise TooLarge(f"announces {_human(announced)}, more than the "
                               f"{_human(limit)} expected", where=where)
            while True:
                if deadline.passed():
                    raise TooSlow(deadline.overdue(), where=where)
                # One byte past the limit is enough to know it is too much.
                chunk = stream.read(min(CHUNK, limit - done + 1))
                if not chunk:
                    break
                done += len(chunk)
                deadline.arrived(len(chunk))
                if done > limit:
                    raise TooLarge(f"more than the {_human(limit)} expected: not read "
                                   "further", where=where)
                if h:
                    h.update(chunk)
                out.write(chunk)
                if progress:
                    progress(done)
        if exact and done != limit:
            raise Truncated(f"{_human(done)}, {_human(limit)} expected (truncated)",
                            where=where)
        if h and h.hexdigest() != sha256:
            raise Mismatch("its sha256 differs from the one expected", where=where)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return done


def fetch(location: str | Path, dest: Path, *, limit: int, deadline: Deadline,
          exact: bool = False, sha256: str | None = None,
          timeout: float = DEFAULT_TIMEOUT,
          progress: Callable[[int], None] | None = None) -> int:
    """Copy an http(s) URL or a file (a regular file, not through a final symlink) to
    dest: at most ``limit`` bytes (exactly, with ``exact``), by ``deadline``, each
    connect and read waiting ``timeout`` seconds at most, checked against ``sha256``
    when given. Returns the bytes copied; on failure dest is removed and a FetchError
    raised (see copy_bounded and open_location)."""
    return copy_bounded(lambda: open_location(location, deadline=deadline, timeout=timeout),
                        dest, limit=limit, deadline=deadline, exact=exact, sha256=sha256,
                        progress=progress, where=str(location))


def fetch_bytes(location: str | Path, *, limit: int, deadline: Deadline,
                timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The bytes at location (at most ``limit``, by ``deadline``), for small things such
    as descriptions. Raises a FetchError as fetch does."""
    where = str(location)
    parts: list[bytes] = []
    done = 0
    with open_location(location, deadline=deadline, timeout=timeout) as (stream, announced):
        if announced is not None and announced > limit:
            raise TooLarge(f"announces {_human(announced)}, more than the "
                           f"{_human(limit)} allowed", where=where)
        while True:
            if deadline.passed():
                raise TooSlow(deadline.overdue(), where=where)
            chunk = stream.read(min(CHUNK, limit - done + 1))
            if not chunk:
                return b"".join(parts)
            done += len(chunk)
            deadline.arrived(len(chunk))
            if done > limit:
                raise TooLarge(f"more than the {_human(limit)} allowed: not read further",
                               where=where)
            parts.append(chunk)


def _nested_deeper(value: object, max_depth: int) -> bool:
    """True when an array or object lies deeper than max_depth (no recursion here)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > max_depth:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def parse_json(data: bytes, *, max_depth: int = MAX_DEPTH, where: str = "") -> object:
    """JSON from bytes someone else wrote: Malformed when it is not UTF-8 JSON or nests
    deeper than max_depth. (json's C parser stops a very deep text by itself, with a
    RecursionError, before it costs anything; the depth of the rest is counted here.)"""
    too_deep = Malformed(f"JSON nested deeper than {max_depth} levels", where=where)
    try:
        value = json.loads(data)
    except RecursionError:
        raise too_deep from None
    except ValueError as e:  # JSONDecodeError and UnicodeError are ValueErrors
        raise Malformed(f"not JSON ({e.__class__.__name__}: {str(e)[:200]})",
                        where=where) from None
    if _nested_deeper(value, max_depth):
        raise too_deep
    return value


def read_file(path: Path, *, limit: int, follow_symlinks: bool = False) -> bytes:
    """A local regular file's bytes (at most ``limit``; not through a final symlink
    unless ``follow_symlinks``): for records, keys and files a person names, any of
    which may turn out to be a device, a FIFO or a folder. Raises Missing, NotAFile,
    TooLarge or Unreachable (unreadable)."""
    where = str(path)
    stream, size = _open_file(path, where, follow_symlinks)
    with stream:
        if size > limit:
            raise TooLarge(f"{_human(size)}, more than the {_human(limit)} allowed",
                           where=where)
        parts, done = [], 0
        try:
            while chunk := stream.read(min(CHUNK << 4, limit - done + 1)):
                parts.append(chunk)
                done += len(chunk)
                if done > limit:  # it grew while being read
                    raise TooLarge(f"more than the {_human(limit)} allowed", where=where)
        except OSError as e:
            raise Unreachable(f"cannot read it: {e.strerror}", where=where) from None
    return b"".join(parts)
