"""Reading and writing a binary cache: a folder (a shared filesystem, or what a static
web server serves) or an http(s) URL that answers GET and HEAD and takes PUT.

Every network operation has a bounded timeout (connecting and each read), so a cache
that is down or never answers costs seconds, not a hang."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

# A description lists every file of an item: a kernel source tree's runs to megabytes.
MAX_DESCRIPTION = 64 << 20
CHUNK = 1 << 16
# What talking to a server can raise: refused, reset, timed out, a malformed answer
# (http.client.HTTPException) or a URL it cannot even send (InvalidURL, a ValueError).
_NET = (urllib.error.URLError, OSError, http.client.HTTPException, ValueError)


class Unreachable(Exception):
    """The cache cannot be reached or does not answer (the reason, in words)."""


def _why(e: BaseException) -> str:
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


class Remote:
    """One cache: ``location`` is a folder or an http(s) URL."""

    def __init__(self, location: str, timeout: float = 5.0) -> None:
        self.location = location.rstrip("/")
        self.timeout = timeout
        self.http = location.startswith(("http://", "https://"))

    def __str__(self) -> str:
        return self.location

    def _url(self, rel: str) -> str:
        return f"{self.location}/{rel}"

    def _open(self, rel: str, method: str = "GET", data=None, headers: dict | None = None):
        req = urllib.request.Request(self._url(rel), data=data, method=method,
                                     headers=headers or {})
        return urllib.request.urlopen(req, timeout=self.timeout)

    def exists(self, rel: str) -> bool:
        """True when the cache holds rel."""
        if not self.http:
            return (Path(self.location) / rel).is_file()
        try:
            with self._open(rel, "HEAD"):
                return True
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise Unreachable(_why(e)) from None
        except _NET as e:
            raise Unreachable(_why(e)) from None

    def get_json(self, rel: str) -> object | None:
        """rel's JSON; None when the cache does not hold it. Unreachable when the cache
        cannot be asked; ValueError when the answer is no JSON."""
        try:
            if not self.http:
                try:
                    with open(Path(self.location) / rel, "rb") as f:
                        data = f.read(MAX_DESCRIPTION + 1)
                except FileNotFoundError:
                    if not Path(self.location).is_dir():
                        raise Unreachable(f"no such folder {self.location}") from None
                    return None
            else:
                with self._open(rel) as r:
                    data = r.read(MAX_DESCRIPTION + 1)
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                return None
            raise Unreachable(_why(e)) from None
        except _NET as e:
            raise Unreachable(_why(e)) from None
        if len(data) > MAX_DESCRIPTION:
            raise ValueError("description too large")
        return json.loads(data)

    def download(self, rel: str, dest: Path, progress: Callable[[int], None]) -> None:
        """Copy rel to dest, calling progress(bytes so far) as it goes. Unreachable when
        the cache cannot be asked or stops answering; FileNotFoundError when it lacks rel."""
        try:
            with (open(Path(self.location) / rel, "rb") if not self.http
                  else self._open(rel)) as src, open(dest, "wb") as out:
                done = 0
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    progress(done)
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                raise FileNotFoundError(rel) from None
            raise Unreachable(_why(e)) from None
        except FileNotFoundError:
            raise
        except _NET as e:
            raise Unreachable(_why(e)) from None

    def put(self, rel: str, src: Path | bytes) -> None:
        """Store src (a file or bytes) as rel; the name appears only once it is complete
        (a temporary name then a rename in a folder; nginx's PUT does the same)."""
        if not self.http:
            dest = Path(self.location) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
            try:
                if isinstance(src, bytes):
                    tmp.write_bytes(src)
                else:
                    with open(src, "rb") as f, open(tmp, "wb") as out:
                        while chunk := f.read(1 << 20):
                            out.write(chunk)
                os.replace(tmp, dest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            return
        size = len(src) if isinstance(src, bytes) else src.stat().st_size
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        try:
            if isinstance(src, bytes):
                with self._open(rel, "PUT", src, headers):
                    return
            with open(src, "rb") as f, self._open(rel, "PUT", f, headers):
                return
        except _NET as e:
            raise Unreachable(_why(e)) from None
