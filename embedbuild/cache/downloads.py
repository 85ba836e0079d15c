"""Source downloads in a binary cache: ``sources/<sha256>``, the very files the lock names.

A download needs no signature: the lock's sha256 is the trust anchor, so a cache (or
anyone who can write to it) can only serve the right bytes or be refused. `cache push`
uploads the downloads a result was built from; a build asks the substituters for a
missing one before it asks Debian, so a team keeps building a locked version after the
archive dropped it. Every fetch goes through the bounded reader: at most the lock's
size, by a deadline within the build's, at the substituters' minimum rate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from embedbuild.bounded import Deadline, FetchError, Missing, TooSlow, Unreachable, fetch
from embedbuild.cache.remote import Remote
from embedbuild.model.source import Source

# A source download from a cache must be complete within this many seconds (the
# kernel tarball is 138 MB).
DEADLINE = 1800.0


def download_path(sha256: str) -> str:
    """Where a source file with this sha256 lives in a cache."""
    return f"sources/{sha256}"


def fetch_download(remotes: list[Remote], src: Source, dest: Path, *, dropped: set[str],
                   warn: Callable[[str], None], build_deadline: Deadline, min_rate: float,
                   grace_timeouts: float) -> bool:
    """Fetch src's file from the first cache that holds it into dest; True when dest then
    holds exactly the locked bytes. Each refusal is one line to ``warn``; a cache that
    cannot be reached, or is too slow, is added to ``dropped`` and not asked again. The
    download must keep ``min_rate`` after ``grace_timeouts`` of the cache's timeout."""
    rel = download_path(src.sha256)
    for remote in remotes:
        if remote.location in dropped or build_deadline.passed():
            continue
        deadline = Deadline(DEADLINE, "the deadline for one source download",
                            parent=build_deadline, min_rate=min_rate,
                            grace=grace_timeouts * remote.timeout)
        try:
            fetch(remote.where(rel), dest, limit=src.limit, exact=src.size is not None,
                  sha256=src.sha256, deadline=deadline, timeout=remote.timeout)
            return True
        except Missing:
            if not remote.url and not Path(remote.location).is_dir():
                dropped.add(remote.location)
                warn(f"cache {remote}: no such folder; not using it in this build")
        except Unreachable as e:
            dropped.add(remote.location)
            warn(f"cache {remote}: {e.message}; not using it in this build")
        except FetchError as e:
            if isinstance(e, TooSlow):
                dropped.add(remote.location)
            warn(f"cache {remote}: source {src.basename} refused: {e.message}; "
                      "fetching it elsewhere")
    return False


def push_download(dest: Remote, path: Path, sha256: str) -> bool:
    """Upload a downloaded source file unless the cache has it; True when uploaded."""
    rel = download_path(sha256)
    if dest.exists(rel):
        return False
    dest.put(rel, path)
    return True
