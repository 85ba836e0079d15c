"""Source downloads in a binary cache: ``sources/<sha256>``, the very files the lock names.

A download needs no signature: the lock's sha256 is the trust anchor, so a cache (or
anyone who can write to it) can only serve the right bytes or be refused. `cache push`
uploads the downloads a result was built from; a build asks the substituters for a
missing one before it asks Debian, so a team keeps building a locked version after the
archive dropped it. Every fetch is bounded by the lock's size and a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from embedbuild.cache.remote import Remote, Unreachable
from embedbuild.model.source import Source
from embedbuild.store import hash_file

# A source download from a cache must be complete within this many seconds.
DEADLINE = 1800.0


def download_path(sha256: str) -> str:
    """Where a source file with this sha256 lives in a cache."""
    return f"sources/{sha256}"


class _Breach(Exception):
    """A download went past its byte limit or its deadline (the reason, in words)."""


def fetch_download(remotes: list[Remote], src: Source, dest: Path, warn: Callable[[str], None],
                   dropped: set[str], deadline: float = DEADLINE) -> bool:
    """Fetch src's file from the first cache that holds it into dest; True when dest then
    holds exactly the locked bytes. Each refusal is one line to ``warn``; a cache that
    cannot be reached is added to ``dropped`` and not asked again."""
    rel = download_path(src.sha256)
    for remote in remotes:
        if remote.location in dropped:
            continue
        end = time.monotonic() + deadline

        def bounded(done: int, remote: Remote = remote, end: float = end) -> None:
            if done > src.limit:
                raise _Breach(f"it sent more than the {src.limit:,} bytes locked")
            if time.monotonic() > end:
                raise _Breach(f"it took longer than {deadline:.0f} s")

        try:
            if not remote.exists(rel):
                continue
            remote.download(rel, dest, bounded)
        except Unreachable as e:
            dropped.add(remote.location)
            warn(f"cache {remote}: {e}; not using it in this build")
            continue
        except FileNotFoundError:
            continue
        except _Breach as e:
            dest.unlink(missing_ok=True)
            warn(f"cache {remote}: source {src.basename} refused: {e}; fetching it elsewhere")
            continue
        if hash_file(dest) == src.sha256:
            return True
        dest.unlink(missing_ok=True)
        warn(f"cache {remote}: source {src.basename} refused: it is not the locked file "
             "(sha256); fetching it elsewhere")
    return False


def push_download(dest: Remote, path: Path, sha256: str) -> bool:
    """Upload a downloaded source file unless the cache has it; True when uploaded."""
    rel = download_path(sha256)
    if dest.exists(rel):
        return False
    dest.put(rel, path)
    return True
