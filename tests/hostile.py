"""Hostile sources for the hardening tests, each with its own watchdog so that a
regression fails fast instead of filling the disk or hanging the run:

- HostileServer: an HTTP server on 127.0.0.1 serving a cache folder, with chosen files
  served endless, with a lying length, or a byte a second (body or headers). It never
  sends more than ``max_bytes`` nor for longer than ``max_seconds`` per answer; when it
  has to stop by itself, it records the path in ``overrun`` (the client should have
  stopped first) and tests assert that list is empty.
- run_watched: the embedbuild CLI in a process group that a watchdog thread kills when
  a folder grows past a byte limit or the run takes too long.
- small_disk: a tmpfs of a few MiB (root only), so a store on it can never fill the
  machine's disk.
- archive_of: a zstd-compressed GNU tar of crafted entries (lying sizes, endless long
  names, data after the end), streamed, never written out uncompressed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import EMBEDBUILD, Run

CHUNK = 1 << 16


@dataclass
class HostileServer:
    """Serve ``folder`` over HTTP on 127.0.0.1; ``behave`` maps a path (as requested,
    e.g. 'items/KEY.json') to 'endless', 'huge-length', 'slow' or 'slow-headers' (a
    byte every ``interval`` seconds)."""

    folder: Path
    behave: dict[str, str] = field(default_factory=dict)
    max_bytes: int = 128 << 20
    max_seconds: float = 20.0
    interval: float = 1.0  # seconds between the bytes of a 'slow' answer
    overrun: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                rel = self.path.lstrip("/")
                server.requests.append(rel)
                how = server.behave.get(rel, "normal")
                with contextlib.suppress(OSError):
                    getattr(server, "_" + how.replace("-", "_"))(self, rel)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HostileServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- behaviours -----------------------------------------------------------

    def _normal(self, h, rel: str) -> None:
        f = self.folder / rel
        if not f.is_file():
            h.send_error(404)
            return
        data = f.read_bytes()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _stream(self, h, rel: str, filler: bytes) -> None:
        """Send filler until the client goes away or the watchdog says enough."""
        sent, t0 = 0, time.monotonic()
        while not self.stop.is_set():
            if sent >= self.max_bytes or time.monotonic() - t0 > self.max_seconds:
                self.overrun.append(rel)
                return
            h.wfile.write(filler)
            sent += len(filler)

    def _endless(self, h, rel: str) -> None:
        h.send_response(200)
        h.end_headers()  # no length: the body ends when the connection does
        self._stream(h, rel, b"[" * CHUNK if rel.startswith("items/") else bytes(CHUNK))

    def _huge_length(self, h, rel: str) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(1 << 40))
        h.end_headers()
        self._stream(h, rel, bytes(CHUNK))

    def _trickle(self, h, rel: str, data: bytes) -> None:
        t0 = time.monotonic()
        for i in range(len(data)):
            if time.monotonic() - t0 > self.max_seconds:
                self.overrun.append(rel)
                return
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()
            if self.stop.wait(self.interval):
                return

    def _slow(self, h, rel: str) -> None:
        data = (self.folder / rel).read_bytes()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.flush()
        self._trickle(h, rel, data)

    def _slow_headers(self, h, rel: str) -> None:
        data = (self.folder / rel).read_bytes()
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        self._trickle(h, rel, head + data)


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def run_watched(*args: str, store: Path, env: dict | None = None, watch: Path | None = None,
                max_bytes: int = 256 << 20, seconds: float = 60.0,
                max_memory: int = 4 << 30) -> tuple[Run, str | None]:
    """Run the embedbuild CLI; a watchdog kills it (its whole process group) when
    ``watch`` (default: the store) holds more than max_bytes or the run takes longer
    than ``seconds``; its address space is limited to max_memory (a reader that never
    stops fails there, not in the machine's memory). Returns (the run, why it was killed
    or None)."""
    full_env = {**os.environ, "EMBEDBUILD_STORE": str(store), "COLUMNS": "200", **(env or {})}
    watch = watch or store

    # prlimit sets the limit and execs: no Python between fork and exec (see
    # test_suite_rules.py), which at-fork handlers of loaded libraries can abort.
    p = subprocess.Popen(["prlimit", f"--as={max_memory}", "--", EMBEDBUILD, *args],
                         env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    killed: list[str] = []
    done = threading.Event()

    def watchdog() -> None:
        t0 = time.monotonic()
        while not done.wait(0.05):
            used = _du(watch) if watch.exists() else 0
            why = (f"it wrote {used:,} bytes under {watch}" if used > max_bytes else
                   f"it ran {time.monotonic() - t0:.0f} s" if time.monotonic() - t0 > seconds
                   else None)
            if why:
                killed.append(why)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                return

    t = threading.Thread(target=watchdog, daemon=True)
    t.start()
    out, err = p.communicate()
    done.set()
    t.join()
    return Run(p.returncode, out, err), (killed[0] if killed else None)


@contextlib.contextmanager
def small_disk(where: Path, mib: int = 48) -> Iterator[Path]:
    """A tmpfs of ``mib`` MiB mounted at where (root only; else the test is skipped)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small disk (tmpfs) needs root")
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@dataclass
class Member:
    """One crafted tar entry. ``data`` is bytes or a count of zero bytes to stream;
    ``size`` is what the header says (default: the data's length)."""

    name: str
    kind: str = "file"
    mode: int = 0o444
    data: bytes | int = b""
    size: int | None = None
    link: str = ""
    flag: bytes | None = None  # another tar type than kind's (e.g. b"x" for pax)


def _chunks(data: bytes | int) -> Iterator[bytes]:
    if isinstance(data, bytes):
        yield data
        return
    zero = bytes(1 << 24)
    left = data
    while left:
        yield zero[: min(len(zero), left)]
        left -= min(len(zero), left)


def archive_of(members: Iterable[Member], dest: Path, trailing_zeros: int = 0) -> tuple[str, int]:
    """Write a zstd GNU tar of members to dest, as embedbuild's pack would lay them out
    (or not); returns (sha256, size) of the compressed file."""
    with open(dest, "wb") as out:
        z = subprocess.Popen(["zstd", "-q", "-T0", "-3", "-c"], stdin=subprocess.PIPE,
                             stdout=out)
    written = 0

    def put(b: bytes) -> None:
        nonlocal written
        z.stdin.write(b)
        written += len(b)

    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}
    for m in members:
        info = tarfile.TarInfo(m.name)
        length = len(m.data) if isinstance(m.data, bytes) else m.data
        info.size = m.size if m.size is not None else length
        info.type = m.flag or types[m.kind]
        info.mode, info.linkname, info.mtime = m.mode, m.link, 0
        put(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
        for chunk in _chunks(m.data):
            put(chunk)
        if length % 512:
            put(bytes(512 - length % 512))
    put(bytes(1024))
    for chunk in _chunks(trailing_zeros):
        put(chunk)
    if written % 10240:
        put(bytes(10240 - written % 10240))
    z.stdin.close()
    assert z.wait() == 0
    h = hashlib.sha256(dest.read_bytes()).hexdigest()
    return h, dest.stat().st_size


def zeros_sha256(n: int) -> str:
    """sha256 of n zero bytes, without holding them."""
    h = hashlib.sha256()
    for chunk in _chunks(n):
        h.update(chunk)
    return h.hexdigest()


def resign(desc_path: Path, secret: Path, change: Callable[[dict], None]) -> dict:
    """Change a cache description and sign it again with ``secret`` (a trusted key: the
    faulty or hostile pusher holds it). Returns the new description."""
    from embedbuild.cache.keys import load_secret

    desc = json.loads(desc_path.read_text())
    desc.pop("signature", None)
    change(desc)
    signed = load_secret(secret).sign(desc)
    desc_path.write_text(json.dumps(signed))
    return signed


def with_archive(cache: Path, desc: dict, members: Iterable[Member],
                 files: dict[str, dict], trailing_zeros: int = 0) -> None:
    """Put a crafted archive into the cache folder and point desc (changed in place) at
    it, with ``files`` as what it describes."""
    tmp = cache / "crafted.tar.zst"
    sha, size = archive_of(members, tmp, trailing_zeros)
    tmp.rename(cache / "archives" / f"{sha}.tar.zst")
    desc["archive"].update(path=f"archives/{sha}.tar.zst", sha256=sha, size=size)
    desc["files"] = files
    desc["size"] = sum(e.get("size", 0) for e in files.values())
