"""A read-only, confined TFTP server for build results.

One thread runs every transfer from one event loop: the listening socket and each
transfer's own socket (its TID) are watched by a selector, and each transfer keeps
an open file and one block-sized buffer, so memory, file descriptors and threads
stay bounded whatever clients do. Supported: RFC 1350 (octet mode), option
negotiation (RFC 2347) with blksize (RFC 2348), timeout and tsize (RFC 2349) and
windowsize (RFC 7440), which U-Boot uses (``tftpwindowsize``) and which makes
loads fast.

Only world-readable regular files under the root are served; absolute paths,
``..`` and symlinks that leave the root are refused; write requests are refused.
Abuse is bounded: sessions in total and per client address, the time a session
lives without progress, and log lines for refused requests.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import logging
import os
import selectors
import socket
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.netns import inside
from embedbuild.rig.protocol import FileTransferProtocol

log = logging.getLogger("embedbuild.tftp")

OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 2, 3, 4, 5, 6
ERR_UNDEFINED, ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL, ERR_UNKNOWN_TID = 0, 1, 2, 4, 5
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348
MAX_WINDOW = 64  # RFC 7440 allows up to 65535; the server may offer less
RETRIES = 5  # timeouts in a row a session survives at the client's timeout (RFC 2349)
MIN_RTO = 0.05  # seconds: below this, scheduling noise on a loaded host looks like loss
MIN_GAP = 0.002  # seconds: an ACK sooner than this after a block was sent predates it
DRAIN = 64  # packets read from one transfer's socket before the loop looks at the others
# Requests read from the listening port in one turn (each costs a few microseconds):
# a flood holds the loop about a millisecond before transfers get their turn, and the
# deep queue below absorbs what arrives meanwhile.
LISTEN_BATCH = 256
LISTEN_RCVBUF = 8 << 20  # bytes queued on the listening port: a burst of requests waits
# SO_RCVBUFFORCE lets root pass net.core.rmem_max (which caps SO_RCVBUF at about 200 KiB
# by default); Python's socket module lacks the constant, Linux's value is 33.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
MAX_PACKET = 65536
REFUSALS_LOGGED_PER_SECOND = 10
# Requests over the per-address limit are answered with an ERROR at most once a second
# per client port and this many times a second in all; the rest are dropped unread.
FLOOD_ERRORS_PER_SECOND = 1024
RESTART_AFTER = 1.0  # seconds without progress after which a repeated request starts over


@dataclass(frozen=True)
class Limits:
    """What one server grants its clients.

    Args:
        sessions: transfers at once, all clients together.
        per_client: transfers at once from one client address.
        idle: seconds a transfer may live without progress, whatever timeout the
            client asked for.
        window: the largest window (RFC 7440 windowsize) granted, whatever the client
            asks: a server may offer less.
    """

    sessions: int = 64
    per_client: int = 16
    idle: float = 30.0
    window: int = MAX_WINDOW


@dataclass
class Transfer:
    """What the log says of one transfer."""

    client: tuple[str, int]
    filename: str
    size: int = 0
    seconds: float = 0.0
    ok: bool = False
    error: str = ""
    started: float = 0.0  # time.monotonic() at its first packet (0: refused at once)
    blksize: int = 512  # as negotiated (RFC 2348): a client may ask for less than set
    window: int = 1  # blocks per ACK, as negotiated (RFC 7440)

    @property
    def rate(self) -> float:
        """MiB/s."""
        return self.size / 2**20 / self.seconds if self.seconds else 0.0


class TftpError(Exception):
    """A request or transfer fails with this TFTP error code and message."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def error_packet(code: int, msg: str) -> bytes:
    """An ERROR packet (RFC 1350) with our own message."""
    return struct.pack("!HH", OP_ERROR, code) + msg.encode(errors="replace") + b"\0"


TOO_MANY = error_packet(ERR_UNDEFINED, "too many transfers from your address")
SERVER_ERROR = error_packet(ERR_UNDEFINED, "server error")


def printable(name: str) -> str:
    """``name`` quoted with control characters escaped: safe in a log line or a terminal."""
    return repr(name)


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR[:PORT]`` as given to ``embedbuild tftp --listen``: (address, port).

    IPv6 addresses go in brackets when a port follows (``[::1]:6970``); a bare IPv6
    address (``::1``) takes the default port 69. Port 0 picks a free port.
    """
    hint = "give an IP address and maybe a port: 127.0.0.1:6969, ::1, [::1]:6969, 0.0.0.0"
    host, port = text.strip(), "69"
    if host.startswith("["):
        inner, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise EmbedbuildError(f"--listen {text!r}: unclosed '[' in address", hint=hint)
        host, port = inner, rest[1:] if rest else port
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not host:
        raise EmbedbuildError(
            f"--listen {text!r}: no address",
            hint="0.0.0.0:PORT serves every interface, 127.0.0.1:PORT only this host",
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise EmbedbuildError(
            f"--listen {text!r}: {host!r} is not an IP address", hint=hint
        ) from None
    if not port.isdigit() or int(port) > 65535:
        raise EmbedbuildError(
            f"--listen {text!r}: port {port!r} is not a number from 0 to 65535", hint=hint
        )
    return host, int(port)


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _deep_queue(sock: socket.socket) -> None:
    """Give a listening socket room for a burst of requests (LISTEN_RCVBUF): past the
    system's cap as root (SO_RCVBUFFORCE), else as far as the cap allows."""
    options = [SO_RCVBUFFORCE, socket.SO_RCVBUF] if sys.platform == "linux" else [
        socket.SO_RCVBUF]
    for option in options:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, LISTEN_RCVBUF)
            return
        except OSError:  # not root: the plain option, capped by net.core.rmem_max
            continue


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def resolve(root: Path, name: str) -> Path:
    """The file a request names, or TftpError if it is not a regular file inside root."""
    if not name:
        raise TftpError(ERR_NOT_FOUND, "no file name")
    if name.startswith("/") or "\\" in name:
        raise TftpError(ERR_ACCESS, "absolute paths are not served")
    if ".." in Path(name).parts:
        raise TftpError(ERR_ACCESS, "'..' is not allowed")
    try:
        real_root = Path(os.path.realpath(root, strict=True))
        path = Path(os.path.realpath(real_root / name, strict=True))
    except OSError as e:
        raise _os_error(e) from None
    if not path.is_relative_to(real_root):
        raise TftpError(ERR_ACCESS, "path leaves the served folder")
    return path


def _os_error(e: OSError) -> TftpError:
    """The TFTP error a client gets for a failed file-system call."""
    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
        return TftpError(ERR_NOT_FOUND, "File not found")
    if e.errno in (errno.EACCES, errno.EPERM):
        return TftpError(ERR_ACCESS, "Permission denied")
    if e.errno == errno.ELOOP:
        return TftpError(ERR_ACCESS, "too many levels of symbolic links")
    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
        return TftpError(ERR_UNDEFINED, "server busy, try again later")
    return TftpError(ERR_UNDEFINED, e.strerror or "cannot read the file")


def _open(path: Path) -> tuple[int, int]:
    """(fd, size) of a world-readable regular file, like tftpd-hpa serves."""
    try:
        # O_NONBLOCK: opening a FIFO must not stall the server.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise _os_error(e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TftpError(ERR_NOT_FOUND, "File not found")
        if not st.st_mode & stat.S_IROTH:
            raise TftpError(ERR_ACCESS, "file is not world-readable")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


@dataclass
class Request:
    """A parsed read or write request."""

    opcode: int
    filename: str
    mode: str
    options: dict[str, str]


def parse_request(data: bytes) -> Request:
    """An RRQ/WRQ packet, decoded with tftpy's packet codec, or TftpError(illegal
    operation) if it is malformed."""
    from tftpy.TftpPacketFactory import TftpPacketFactory

    if data[-1:] != b"\0":
        raise TftpError(ERR_ILLEGAL, "malformed request")
    try:
        # Some old clients pad requests with NULs: they end nothing.
        pkt = TftpPacketFactory().parse(data.rstrip(b"\0") + b"\0")
    except Exception:  # tftpy raises bare TftpException, struct.error, UnicodeError...
        raise TftpError(ERR_ILLEGAL, "malformed request") from None
    if pkt.opcode not in (OP_RRQ, OP_WRQ):
        raise TftpError(ERR_ILLEGAL, "malformed request")
    options: dict[str, str] = {}
    for k, v in pkt.options.items():
        # The first of repeated options counts, like the first of anything.
        key = k.decode(errors="replace") if isinstance(k, bytes) else str(k)
        val = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
        options.setdefault(key.lower(), val)
    name = pkt.filename
    mode = pkt.mode
    return Request(pkt.opcode, os.fsdecode(name) if isinstance(name, bytes) else name,
                   (mode.decode(errors="replace") if isinstance(mode, bytes) else mode).lower(),
                   options)


def _int_option(options: dict[str, str], key: str, lo: int, hi: int) -> int | None:
    """An option's value if it is an integer in [lo, hi]; out of range it is ignored."""
    v = options.get(key, "")
    # ASCII digits only, and few: str.isdigit() takes '²', which int() refuses.
    if not (v.isascii() and v.isdigit() and len(v) <= 10) or not lo <= int(v) <= hi:
        return None
    return int(v)


class _Session:
    """One transfer: its own socket, an open file and a send buffer of one block."""

    def __init__(
        self,
        server: TftpServer,
        sock: socket.socket,
        client: tuple,
        fd: int,
        size: int,
        request: Request,
        transfer: Transfer,
    ) -> None:
        self.server = server
        self.sock = sock
        self.client = client
        self.fd = fd
        self.size = size
        self.transfer = transfer
        opts = request.options
        self.blksize, self.window, oack = 512, 1, {}
        if (v := _int_option(opts, "blksize", MIN_BLKSIZE, MAX_BLKSIZE)) is not None:
            self.blksize = oack["blksize"] = v
        if (v := _int_option(opts, "windowsize", 1, 65535)) is not None:
            self.window = oack["windowsize"] = max(1, min(v, MAX_WINDOW,
                                                          server.limits.window))
        timeout = 1.0
        if (v := _int_option(opts, "timeout", 1, 255)) is not None:
            timeout = float(v)
            oack["timeout"] = v  # echoed unchanged: U-Boot refuses any other value
        if _int_option(opts, "tsize", 0, 0) is not None:
            oack["tsize"] = size
        self.oack = (
            struct.pack("!H", OP_OACK) + b"".join(f"{k}\0{v}\0".encode() for k, v in oack.items())
            if oack
            else None
        )
        transfer.blksize, transfer.window = self.blksize, self.window
        self.nblocks = size // self.blksize + 1  # the last block is short (maybe empty)
        self.buf = bytearray(4 + self.blksize)
        # The client's timeout bounds how long we wait; the measured round trip decides
        # how soon we retransmit (a lost block should not cost a whole timeout).
        self.max_rto = timeout
        self.rto = min(timeout, 1.0)  # until a round trip is measured
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.idle_limit = min(timeout * (RETRIES + 1), server.limits.idle)
        # Block 0 is the OACK when there is one: the client acknowledges it with ACK 0.
        self.acked = -1 if self.oack else 0
        self.end = self.acked  # the last block of the window
        self.high = self.acked  # the highest block sent so far
        self.sent: dict[int, float] = {}  # when each unacknowledged block was last sent
        self.sent_at = 0.0
        self.clean = False  # the window was sent once, whole: its ACK times the round trip
        self.deadline = 0.0
        self.progress_at = 0.0
        # Blocks sent since the client's last ACK, and how many it may get. Debian's U-Boot
        # posts 32 virtio-net receive buffers and does not notify QEMU when it gives them
        # back: once QEMU finds none free, that U-Boot hears nothing more. A window resent
        # after a gap can land on up to window - 2 blocks of the old one, so on top of a
        # window there is room for one probe of two blocks; then the client's timer speaks.
        self.unanswered = 0
        self.budget = self.window + (2 if self.window > 1 else RETRIES)
        self.started = 0.0
        self.done = False

    def start(self, now: float) -> None:
        self.started = self.progress_at = now
        self._send(range(0 if self.oack else 1, 1 if self.oack else self.window + 1), now)
        self.clean = True

    def _send(self, blocks, now: float) -> int:
        """Send these blocks (0: the OACK), each read from the file into the one buffer.
        Sending nothing leaves the timer alone: only what is sent gets a new deadline."""
        blocks = [n for n in blocks if n <= self.nblocks]
        if not blocks:
            return 0
        view = memoryview(self.buf)
        for n in blocks:
            if n == 0:
                self.sock.sendto(self.oack, self.client)
            else:
                offset = (n - 1) * self.blksize
                want = min(self.blksize, self.size - offset)
                struct.pack_into("!HH", self.buf, 0, OP_DATA, n & 0xFFFF)
                if os.preadv(self.fd, [view[4 : 4 + want]], offset) != want:
                    raise TftpError(ERR_UNDEFINED, "the file changed while being sent")
                self.sock.sendto(view[: 4 + want], self.client)
            self.sent[n] = now
            self.unanswered += 1
            self.high = max(self.high, n)
        self.end = min(self.acked + self.window, self.nblocks) if self.acked >= 0 else 0
        self.sent_at = now
        self.clean = False
        self.deadline = min(now + self.rto, self.progress_at + self.idle_limit)
        return len(blocks)

    def on_packet(self, data: bytes, addr: tuple, now: float) -> None:
        """Handle one packet that reached this transfer's port."""
        op = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        if addr[:2] != self.client[:2]:
            # RFC 1350: tell a stranger it has the wrong TID, and go on; never answer an ERROR.
            if op != OP_ERROR:
                self.sock.sendto(error_packet(ERR_UNKNOWN_TID, "unknown transfer ID"), addr)
            return
        if op == OP_ERROR:
            msg = data[4:].split(b"\0")[0].decode(errors="replace")
            self.finish(f"client aborted: {msg!r}")
            return
        if op != OP_ACK or len(data) < 4:
            return  # junk: ignored, and it does not move any timer
        blk = struct.unpack("!H", data[2:4])[0]
        # Block numbers wrap at 65536: the first match at or above what is acked.
        got = self.acked + ((blk - self.acked) & 0xFFFF)
        if got > self.high:
            return  # stale: it neither resends nor moves the timer
        self.unanswered = 0
        if got > self.acked:
            if self.clean and got == self.end:
                self._measure(now - self.sent_at)
            self.acked, self.progress_at = got, now
            self.rto = self._base_rto()
            self.sent = {n: t for n, t in self.sent.items() if n > got}
            if got == self.nblocks:
                self.finish()
                return
        elif self.window == 1 or got < 0:
            # With window 1 a repeated ACK is a stale duplicate: answering it would double
            # the traffic (Sorcerer's Apprentice), so the timer handles it.
            return
        # The client holds everything up to ``got`` and wants what follows. Blocks it was
        # sent a moment ago are still on their way (this ACK predates them): send only
        # what follows them. Older ones were lost: it dropped the rest of the window, so
        # resend from there (RFC 7440 section 4), at once rather than after a timeout.
        nxt = got + 1
        fresh = self.sent.get(nxt, -1.0) > now - max((self.srtt or 0.0) / 2, MIN_GAP)
        if fresh:
            nxt = self.high + 1
        whole = nxt == got + 1 and got == self.high
        self.clean = self._send(range(nxt, got + self.window + 1), now) > 0 and whole

    def on_timeout(self, now: float) -> None:
        """The deadline passed without progress: probe, or give up."""
        if now - self.progress_at >= self.idle_limit:
            self.sock.sendto(error_packet(ERR_UNDEFINED, "timed out"), self.client)
            self.finish(f"no progress for {now - self.progress_at:.0f} s")
            return
        self.rto = min(self.rto * 2, self.max_rto)
        # Probe with the first and last blocks of the window, not all of it: a lost first
        # block is resent, a lost last one brings the window's ACK, and anything else
        # brings an ACK that says where the client is. Within the budget only: the window
        # may still sit in a slow client's ring.
        probe = sorted({self.acked + 1, self.end} if self.acked >= 0 else {0})
        if self.unanswered + len(probe) <= self.budget:
            self._send(probe, now)
        self.deadline = min(now + self.rto, self.progress_at + self.idle_limit)

    def _measure(self, rtt: float) -> None:
        """Round-trip estimate as TCP keeps it (RFC 6298)."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def _base_rto(self) -> float:
        if self.srtt is None:
            return min(self.max_rto, 1.0)
        return min(max(self.srtt + 4 * self.rttvar, MIN_RTO), self.max_rto)

    def finish(self, error: str = "") -> None:
        """End the transfer, record it and free its socket and file."""
        if self.done:
            return
        self.done = True
        t = self.transfer
        t.ok = not error
        t.error = error
        t.size = self.size if t.ok else max(self.acked, 0) * self.blksize
        t.started = self.started
        t.seconds = time.monotonic() - self.started
        self.server._ended(self)


class TftpServer(FileTransferProtocol):
    """Serve the files under ``root`` over TFTP, read-only.

    Args:
        root: the folder served (a build result or any folder).
        host: address to listen on (IPv4 or IPv6).
        port: UDP port (69 by default; 0 picks a free one, see ``port`` after start()).
        on_transfer: called with each finished Transfer (for logs and timing reports).
        netns: path of a network namespace to serve in (/run/netns/NAME).
        limits: sessions and idle time granted to clients.
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 69,
        on_transfer=None,
        netns: str | None = None,
        limits: Limits = Limits(),
    ) -> None:
        self.root = Path(root)
        self.host = host
        self.netns = netns
        self.limits = limits
        self.sock = self._listen(port)
        self.port = self.sock.getsockname()[1]
        self.on_transfer = on_transfer
        self.transfers: collections.deque[Transfer] = collections.deque(maxlen=256)
        self.sessions: dict[tuple, _Session] = {}
        self._per_address: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._refusal_window = (0.0, 0, 0)  # (second, lines logged, lines suppressed)
        self._rbuf = bytearray(MAX_PACKET)  # every request is read into this one buffer
        # Requests over the per-address limit in the current second: the client ports
        # answered, and how many were dropped unanswered.
        self._flood_second = 0
        self._flood_answered: set[tuple] = set()
        self._flood_dropped = 0

    @property
    def address(self) -> str:
        """Where the server listens, as ``host:port`` (IPv6 in brackets)."""
        return format_address(self.host, self.port)

    def _socket(self) -> socket.socket:
        with inside(self.netns):
            return socket.socket(_family(self.host), socket.SOCK_DGRAM)

    def _transfer_socket(self) -> socket.socket:
        sock = self._socket()
        try:
            sock.bind((self.host, 0))  # a new port per transfer (the TID)
        except OSError:
            sock.close()
            raise
        return sock

    def _listen(self, port: int) -> socket.socket:
        # No SO_REUSEADDR: with it, a second server could bind the same address and
        # port and silently take requests meant for this one.
        try:
            sock = self._socket()
        except OSError as e:
            raise EmbedbuildError(f"cannot make a UDP socket: {e.strerror}") from None
        where = format_address(self.host, port)
        try:
            _deep_queue(sock)
            sock.bind((self.host, port))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise EmbedbuildError(
                    f"another TFTP server is listening on {where}",
                    hint="stop it, or listen on another port (--listen ADDR:PORT)",
                ) from None
            if e.errno == errno.EACCES:
                raise EmbedbuildError(
                    f"cannot listen on {where}/udp: permission denied",
                    hint="ports below 1024 need root; choose another with --listen ADDR:PORT",
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise EmbedbuildError(
                    f"cannot listen on {where}/udp: {self.host} is not an address of this host",
                    hint="see `ip addr` for the addresses this host has",
                ) from None
            raise EmbedbuildError(f"cannot listen on {where}/udp: {e.strerror}") from None
        return sock

    def start(self) -> TftpServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="tftp")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; transfers in flight end at once."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread:
            self._thread.join(timeout=5)
        if not (self._thread and self._thread.is_alive()):
            self._close_all()

    def __enter__(self) -> TftpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Answer requests until stop(); no packet and no failed transfer stops the server."""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                self._turn()
        finally:
            self._close_all()

    def _turn(self) -> None:
        """One round of the loop: wait for packets or the next deadline, then handle them."""
        now = time.monotonic()
        wait = min((s.deadline for s in self.sessions.values()), default=now + 1.0) - now
        try:
            events = self._sel.select(max(0.0, min(wait, 1.0)))
        except OSError:
            log.exception("tftp: select failed")
            time.sleep(0.1)
            return
        if any(key.data == "wake" for key, _ in events):
            return
        # Transfers under way first, new requests after: a flood on the listening port
        # delays no transfer by more than the requests of one turn.
        for key, _ in sorted(events, key=lambda e: e[0].data is None):
            if key.data is None:
                self._drain_requests()
            elif not key.data.done:
                self._drain(key.data.sock, key.data.on_packet, key.data)
        now = time.monotonic()
        for s in [s for s in self.sessions.values() if s.deadline <= now]:
            self._guarded(s, s.on_timeout, now)

    def _drain_requests(self) -> None:
        """Read what waits on the listening port (LISTEN_BATCH packets at most), drop the
        flood before any parsing, and handle requests from addresses that hold no
        transfer first: a newcomer is never queued behind a flooding neighbour."""
        buf, limit = self._rbuf, self.limits.per_client
        newcomers: list[tuple[bytes, tuple]] = []
        others: list[tuple[bytes, tuple]] = []
        now = time.monotonic()
        for _ in range(LISTEN_BATCH):
            try:
                n, addr = self.sock.recvfrom_into(buf, MAX_PACKET, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                # A UDP socket can report an earlier ICMP error here: it is not fatal.
                log.warning("tftp: receive failed: %s", e.strerror)
                break
            op = buf[1] if n >= 2 and buf[0] == 0 else None
            if op == OP_ERROR:
                continue  # RFC 1350: an ERROR is never answered
            old = self.sessions.get(addr)
            if old is not None:
                if now - old.progress_at < RESTART_AFTER:
                    continue  # a repeated request: the transfer under way answers it
                others.append((bytes(buf[:n]), addr))
                continue
            held = self._per_address.get(addr[0], 0)
            if held >= limit and op == OP_RRQ:
                self._refuse_flood(addr, now)  # refused before parsing: a flood costs little
                continue
            (others if held else newcomers).append((bytes(buf[:n]), addr))
        for data, addr in newcomers + others:
            try:
                self._on_request(data, addr, time.monotonic())
            except Exception:
                log.exception("tftp: request from %s failed", format_address(*addr[:2]))
                self._send_quietly(self.sock, SERVER_ERROR, addr)

    def _refuse_flood(self, client: tuple, now: float) -> None:
        """Answer a request over the per-address limit, or drop it: each client port gets
        one ERROR a second, and all of them FLOOD_ERRORS_PER_SECOND."""
        second = int(now)
        if second != self._flood_second:
            if self._flood_dropped:
                log.warning("tftp: %d requests over the per-address limit dropped unanswered",
                            self._flood_dropped)
            self._flood_second, self._flood_dropped = second, 0
            self._flood_answered.clear()
        if client in self._flood_answered or len(self._flood_answered) >= FLOOD_ERRORS_PER_SECOND:
            self._flood_dropped += 1
            return
        self._flood_answered.add(client)
        self._send_quietly(self.sock, TOO_MANY, client)
        self._count_refusal(client, "too many transfers from your address")

    def _drain(self, sock: socket.socket, handle, session: _Session) -> None:
        for _ in range(DRAIN):
            try:
                data, addr = sock.recvfrom(MAX_PACKET, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # A UDP socket can report an earlier ICMP error here: it is not fatal.
                session.finish(e.strerror or str(e))
                return
            self._guarded(session, handle, data, addr, time.monotonic())
            if session.done:
                return

    def _guarded(self, session: _Session, fn, *args) -> None:
        """Run a session step; whatever it raises ends that session only."""
        try:
            fn(*args)
        except TftpError as e:
            self._send_quietly(session.sock, error_packet(e.code, e.msg), session.client)
            session.finish(e.msg)
        except OSError as e:
            session.finish(e.strerror or str(e))
        except Exception as e:
            log.exception("tftp: transfer to %s failed", format_address(*session.client[:2]))
            self._send_quietly(session.sock, SERVER_ERROR, session.client)
            session.finish(f"server error: {e!r}")

    @staticmethod
    def _send_quietly(sock: socket.socket, packet: bytes, addr: tuple) -> None:
        with contextlib.suppress(OSError):  # the client learns by its own timeout
            sock.sendto(packet, addr)

    def _on_request(self, data: bytes, client: tuple, now: float) -> None:
        """A packet to the listening port: start a transfer or refuse it."""
        op = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        if op == OP_ERROR:
            return  # RFC 1350: an ERROR is never answered
        old = self.sessions.get(client)
        if old and now - old.progress_at < RESTART_AFTER:
            return  # a repeated request: the transfer under way answers it
        try:
            if op not in (OP_RRQ, OP_WRQ):
                raise TftpError(ERR_ILLEGAL, "expected a read request")
            req = parse_request(data)
        except TftpError as e:
            self._refuse(client, None, e)
            return
        t = Transfer(client[:2], req.filename)
        try:
            if req.opcode == OP_WRQ:
                raise TftpError(ERR_ACCESS, "read-only server")
            if req.mode == "netascii" or req.mode == "mail":
                raise TftpError(ERR_UNDEFINED, f"{req.mode} mode is not supported: use octet")
            if req.mode != "octet":
                raise TftpError(ERR_ILLEGAL, "unknown transfer mode")
            if old:
                # The same client port asks again after a stall: it started over.
                old.finish("the client restarted the request")
            if len(self.sessions) >= self.limits.sessions:
                raise TftpError(ERR_UNDEFINED, "server busy, try again later")
            if self._per_address[client[0]] >= self.limits.per_client:
                raise TftpError(ERR_UNDEFINED, "too many transfers from your address")
            path = resolve(self.root, req.filename)
            fd, size = _open(path)
        except TftpError as e:
            t.error = e.msg
            self._refuse(client, req, e)
            self._record(t)
            return
        try:
            sock = self._transfer_socket()
        except OSError as e:
            os.close(fd)
            err = _os_error(e)
            t.error = err.msg
            self._refuse(client, req, err)
            self._record(t)
            return
        session = _Session(self, sock, client, fd, size, req, t)
        self.sessions[client] = session
        self._per_address[client[0]] += 1
        self._sel.register(sock, selectors.EVENT_READ, session)
        self._guarded(session, session.start, now)

    def _refuse(self, client: tuple, req: Request | None, e: TftpError) -> None:
        """Answer a refused request with an ERROR from the listening port, and log it
        (a few lines a second at most: a flood must not flood the log too)."""
        self._send_quietly(self.sock, error_packet(e.code, e.msg), client)
        what = (
            f"{'write' if req.opcode == OP_WRQ else 'read'} request for {printable(req.filename)}"
            if req
            else "packet"
        )
        self._count_refusal(client, e.msg, what)

    def _count_refusal(self, client: tuple, why: str, what: str = "request") -> None:
        second, logged, suppressed = self._refusal_window
        now = int(time.monotonic())
        if now != second:
            if suppressed:
                log.warning("tftp: %d more refused requests not logged", suppressed)
            second, logged, suppressed = now, 0, 0
        if logged >= REFUSALS_LOGGED_PER_SECOND:
            self._refusal_window = (second, logged, suppressed + 1)
            return
        self._refusal_window = (second, logged + 1, suppressed)
        log.warning("%s %s refused: %s", format_address(*client[:2]), what, why)

    def _ended(self, session: _Session) -> None:
        """Free what a finished session held, and report it."""
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
        self._per_address[session.client[0]] -= 1
        if self._per_address[session.client[0]] <= 0:
            del self._per_address[session.client[0]]
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(session.sock)
        session.sock.close()
        os.close(session.fd)
        t = session.transfer
        log.log(
            logging.INFO if t.ok else logging.WARNING,
            "%s %s %s: %d bytes in %.2f s (%.1f MiB/s)",
            format_address(*t.client),
            printable(t.filename),
            "sent" if t.ok else f"failed ({t.error})",
            t.size,
            t.seconds,
            t.rate,
        )
        self._record(t)

    def _record(self, t: Transfer) -> None:
        self.transfers.append(t)
        if self.on_transfer:
            try:
                self.on_transfer(t)
            except Exception:
                log.exception("tftp: on_transfer callback failed")

    def _close_all(self) -> None:
        for s in list(self.sessions.values()):
            s.finish("server stopped")
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()
