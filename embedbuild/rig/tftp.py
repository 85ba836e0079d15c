"""A read-only, confined TFTP server for build results.

Requests are parsed with tftpy's packet codec; transfers run here, one thread
each, because tftpy has no RFC 7440 windowsize and U-Boot does
(``tftpwindowsize``): sending a window of blocks per ACK is what makes loads
fast. Options: blksize (RFC 2348), timeout and tsize (RFC 2349), windowsize.

Only regular files under the root are served; absolute paths, ``..`` and
symlinks that leave the root are refused; write requests are refused.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import EmbedbuildError
from embedbuild.rig.netns import inside

log = logging.getLogger("embedbuild.tftp")

OP_DATA, OP_ACK, OP_ERROR = 3, 4, 5
ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL, ERR_OPTION = 1, 2, 4, 8
MAX_BLKSIZE = 65464
MAX_WINDOW = 64
RETRIES = 5
GAP_SETTLE = 0.2  # seconds during which repeated gap reports count as one


@dataclass
class Transfer:
    """What the log says of one transfer."""

    client: tuple[str, int]
    filename: str
    size: int = 0
    seconds: float = 0.0
    ok: bool = False
    error: str = ""

    @property
    def rate(self) -> float:
        """MiB/s."""
        return self.size / 2**20 / self.seconds if self.seconds else 0.0


class TftpError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _error_packet(code: int, msg: str) -> bytes:
    from tftpy.TftpPacketTypes import TftpPacketERR

    p = TftpPacketERR()
    p.errorcode = code
    p.errmsgs[code] = msg.encode()  # tftpy sends its own text per code: ours is clearer
    return p.encode().buffer


def resolve(root: Path, name: str) -> Path:
    """The file a request names, or TftpError if it is not a regular file inside root."""
    if not name or name.startswith("/") or "\\" in name:
        raise TftpError(ERR_ACCESS, "absolute paths are not served")
    parts = Path(name).parts
    if ".." in parts:
        raise TftpError(ERR_ACCESS, "'..' is not allowed")
    real_root = root.resolve()
    path = (real_root / name).resolve()
    if not path.is_relative_to(real_root):
        raise TftpError(ERR_ACCESS, "path leaves the served folder")
    if not path.is_file():
        raise TftpError(ERR_NOT_FOUND, "File not found")
    return path


class TftpServer:
    """Serve the files under ``root`` over TFTP, read-only.

    Args:
        root: the folder served (a build result or any folder).
        host: address to listen on.
        port: UDP port (69 by default; 0 picks a free one, see ``port`` after start()).
        on_transfer: called with each finished Transfer (for logs and timing reports).
        netns: path of a network namespace to serve in (/run/netns/NAME).
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 69,
        on_transfer=None,
        netns: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.host = host
        self.netns = netns
        self.sock = self._socket(port)
        self.port = self.sock.getsockname()[1]
        self.on_transfer = on_transfer
        self.transfers: list[Transfer] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _socket(self, port: int) -> socket.socket:
        with inside(self.netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
        except OSError as e:
            sock.close()
            raise EmbedbuildError(
                f"cannot listen on {self.host}:{port}/udp: {e.strerror}",
                hint="port 69 needs root; is another TFTP server running there?",
            ) from None
        return sock

    def start(self) -> TftpServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self) -> TftpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Answer requests until stop(); a bad packet never stops the server."""
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._request, args=(data, client), daemon=True).start()

    def _request(self, data: bytes, client: tuple[str, int]) -> None:
        from tftpy.TftpPacketFactory import TftpPacketFactory
        from tftpy.TftpPacketTypes import TftpPacketRRQ, TftpPacketWRQ

        sock = self._socket(0)  # a new port per transfer (the TID)
        try:
            try:
                pkt = TftpPacketFactory().parse(data)
            except Exception:
                log.warning("%s:%d: malformed packet ignored", *client)
                sock.sendto(_error_packet(ERR_ILLEGAL, "malformed request"), client)
                return
            if isinstance(pkt, TftpPacketWRQ):
                log.warning("%s:%d: write request for %r refused", *client, pkt.filename)
                sock.sendto(_error_packet(ERR_ACCESS, "read-only server"), client)
                return
            if not isinstance(pkt, TftpPacketRRQ):
                sock.sendto(_error_packet(ERR_ILLEGAL, "expected a read request"), client)
                return
            name = (
                pkt.filename.decode(errors="replace")
                if isinstance(pkt.filename, bytes)
                else pkt.filename
            )
            t = Transfer(client, name)
            try:
                path = resolve(self.root, name)
                self._send(sock, client, path, {k.lower(): v for k, v in pkt.options.items()}, t)
                t.ok = True
            except TftpError as e:
                t.error = e.msg
                sock.sendto(_error_packet(e.code, e.msg), client)
            except OSError as e:
                t.error = str(e)
            self.transfers.append(t)
            level = logging.INFO if t.ok else logging.WARNING
            log.log(
                level,
                "%s:%d %s %s: %d bytes in %.2f s (%.1f MiB/s)",
                *client,
                name,
                "sent" if t.ok else f"failed ({t.error})",
                t.size,
                t.seconds,
                t.rate,
            )
            if self.on_transfer:
                self.on_transfer(t)
        finally:
            sock.close()

    def _send(self, sock: socket.socket, client, path: Path, opts: dict, t: Transfer) -> None:
        size = path.stat().st_size
        blksize, window, timeout, oack = 512, 1, 1.0, {}

        def num(key: str, lo: int, hi: int) -> int | None:
            try:
                v = int(opts[key])
            except (KeyError, ValueError):
                return None
            return min(max(v, lo), hi)

        if (v := num("blksize", 8, MAX_BLKSIZE)) is not None:
            blksize = v
            oack["blksize"] = v
        if (v := num("windowsize", 1, MAX_WINDOW)) is not None:
            window = v
            oack["windowsize"] = v
        if (v := num("timeout", 1, 255)) is not None:
            timeout = float(v)
            oack["timeout"] = v
        if "tsize" in opts:
            oack["tsize"] = size
        sock.settimeout(timeout)
        t0 = time.monotonic()
        if oack:
            payload = b"".join(f"{k}\0{v}\0".encode() for k, v in oack.items())
            self._exchange(sock, client, struct.pack("!H", 6) + payload, 0)
        with open(path, "rb") as f:
            data = f.read()
        nblocks = size // blksize + 1  # the last block is short (maybe empty)
        acked = 0  # blocks 1..acked are acknowledged
        retries = 0
        resent_at = 0.0  # when we last resent a window after a gap report
        while acked < nblocks:
            end = min(acked + window, nblocks)
            for n in range(acked + 1, end + 1):
                chunk = data[(n - 1) * blksize : n * blksize]
                sock.sendto(struct.pack("!HH", OP_DATA, n & 0xFFFF) + chunk, client)
            while True:
                got = self._wait_ack(sock, client, acked, end, window)
                if got is None:
                    retries += 1
                    if retries > RETRIES:
                        raise TftpError(0, "timed out waiting for ACK")
                    break
                if got == acked:
                    # Repeats of a gap report that arrive right after our resend come
                    # from the same burst: ignore them. A later one means the resend
                    # was lost too: resend again, as a retry.
                    if time.monotonic() - resent_at < GAP_SETTLE:
                        continue
                    resent_at = time.monotonic()
                    retries += 1
                    if retries > RETRIES:
                        raise TftpError(0, "client keeps reporting lost blocks")
                    break
                acked, retries = got, 0
                break
        t.size = size
        t.seconds = time.monotonic() - t0

    def _exchange(self, sock, client, packet: bytes, block: int) -> None:
        """Send a packet (the OACK) until the client ACKs ``block``."""
        for _ in range(RETRIES + 1):
            sock.sendto(packet, client)
            if self._wait_ack(sock, client, block - 1, block) == block:
                return
        raise TftpError(0, "timed out waiting for ACK of the option acknowledgement")

    @staticmethod
    def _wait_ack(sock, client, acked: int, end: int, window: int = 1) -> int | None:
        """Highest block in (acked, end] the client acknowledged; ``acked`` again when
        it reports a gap in a window; None on timeout."""
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                return None
            if addr != client or len(data) < 4:
                continue  # another host, or junk: ignore
            op, blk = struct.unpack("!HH", data[:4])
            if op == OP_ERROR:
                msg = data[4:].rstrip(b"\0").decode(errors="replace")
                raise TftpError(0, f"client aborted: {msg}")
            if op != OP_ACK:
                continue
            # Block numbers wrap at 65536: map back into what we sent.
            for cand in range(end, acked, -1):
                if cand & 0xFFFF == blk:
                    return cand
            # A repeated ACK inside a window means blocks were lost: resend.
            # With window 1 it is a stale duplicate; answering it would double
            # the traffic (Sorcerer's Apprentice), so wait for the timeout.
            if window > 1 and blk == acked & 0xFFFF:
                return acked
