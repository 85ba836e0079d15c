"""Reading and writing a binary cache: a folder (a shared filesystem, or what a static
web server serves) or an http(s) URL that answers GET and HEAD and takes PUT.

Every read goes through embedbuild.bounded: a byte limit, a total deadline, a timeout
for connecting and for each read, regular files only in a folder. So a cache that is
down, silent, slow or endless costs seconds and bytes it is allowed, not a hang or a
full disk."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from embedbuild.bounded import (
    DEFAULT_TIMEOUT,
    NETWORK_ERRORS,
    Deadline,
    Missing,
    Unreachable,
    fetch,
    fetch_bytes,
    open_location,
    parse_json,
    why,
)
from embedbuild.cache.description import MAX_DESCRIPTION

__all__ = ["MAX_DESCRIPTION", "Remote", "Unreachable"]


class Remote:
    """One cache: ``location`` is a folder or an http(s) URL; ``timeout`` bounds each
    connect and each read (the deadlines given to each call bound the whole)."""

    def __init__(self, location: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.location = location.rstrip("/")
        self.timeout = timeout
        self.http = location.startswith(("http://", "https://"))
        # Any other URL (ftp://, file://) is refused where it is read, as unreachable.
        self.url = "://" in location

    def __str__(self) -> str:
        return self.location

    def where(self, rel: str) -> str:
        """rel's URL, or its path in the folder (rel is one of the cache's own names)."""
        return f"{self.location}/{rel}" if self.url else str(Path(self.location) / rel)

    def _missing(self, e: Missing) -> Missing | Unreachable:
        """A file missing from a folder that is itself missing: the cache is down."""
        if not self.url and not Path(self.location).is_dir():
            return Unreachable(f"no such folder {self.location}", where=self.location)
        return e

    def exists(self, rel: str) -> bool:
        """True when the cache holds rel (a regular file, in a folder)."""
        if not self.url:
            p = Path(self.location) / rel
            return p.is_file() and not p.is_symlink()
        try:
            with open_location(self.where(rel), deadline=Deadline(self.timeout * 4),
                               timeout=self.timeout, method="HEAD"):
                return True
        except Missing:
            return False

    def get_json(self, rel: str, deadline: Deadline) -> object | None:
        """rel's JSON (at most MAX_DESCRIPTION bytes, nested at most bounded.MAX_DEPTH
        deep, by ``deadline``); None when the cache does not hold it. Raises the
        FetchError of what went wrong otherwise (Unreachable: the cache cannot be asked)."""
        try:
            data = fetch_bytes(self.where(rel), limit=MAX_DESCRIPTION, deadline=deadline,
                               timeout=self.timeout)
        except Missing as e:
            err = self._missing(e)
            if isinstance(err, Unreachable):
                raise err from None
            return None
        return parse_json(data, where=self.where(rel))

    def download(self, rel: str, dest: Path, *, size: int, sha256: str, deadline: Deadline,
                 progress: Callable[[int], None]) -> None:
        """Copy rel to dest: exactly ``size`` bytes whose sha256 is ``sha256``, by
        ``deadline``, calling progress(bytes so far). Raises a FetchError (Missing,
        TooLarge, Truncated, Mismatch, TooSlow, NotAFile, Unreachable); dest is then gone."""
        try:
            fetch(self.where(rel), dest, limit=size, exact=True, sha256=sha256,
                  deadline=deadline, timeout=self.timeout, progress=progress)
        except Missing as e:
            raise self._missing(e) from None

    def put(self, rel: str, src: Path | bytes) -> None:
        """Store src (a file or bytes) as rel; the name appears only once it is complete
        (a temporary name then a rename in a folder; nginx's PUT does the same)."""
        if self.url and not self.http:
            raise Unreachable("only http://, https:// and folders take uploads",
                              where=self.location)
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

        def send(data) -> None:
            req = urllib.request.Request(self.where(rel), data=data, method="PUT",
                                         headers=headers)
            with urllib.request.urlopen(req, timeout=self.timeout):
                return

        try:
            if isinstance(src, bytes):
                send(src)
            else:
                with open(src, "rb") as f:
                    send(f)
        except NETWORK_ERRORS as e:
            raise Unreachable(why(e), where=self.where(rel)) from None
