"""Source downloads in a binary cache: ``sources/<sha256>``, the very files the lock names.

A download needs no signature: the lock's sha256 is the trust anchor, so a cache (or
anyone who can write to it) can only serve the right bytes or be refused. `cache push`
uploads the downloads a result was built from; a build asks the substituters for a
missing one before it asks Debian, so a team keeps building a locked version after the
archive dropped it. Every fetch goes through the bounded reader: at most the lock's
size, by a deadline within the build's, at the substituters' minimum rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from embedbuild.bounded import Deadline, FetchError, Missing, TooSlow, Unreachable, fetch
from embedbuild.cache.remote import Remote
from embedbuild.model.source import Source

if TYPE_CHECKING:
    from embedbuild.cache.substitute import Substituters

# A source download from a cache must be complete within this many seconds (the
# kernel tarball is 138 MB).
DEADLINE = 1800.0


def download_path(sha256: str) -> str:
    """Where a source file with this sha256 lives in a cache."""
    return f"sources/{sha256}"


def fetch_download(subs: Substituters, src: Source, dest: Path) -> bool:
    """Fetch src's file from the first of the substituters that holds it into dest; True
    when dest then holds exactly the locked bytes. Each refusal is one warning line; a
    cache that cannot be reached, or is too slow, is not asked again in this build."""
    from embedbuild.cache.substitute import GRACE_TIMEOUTS

    rel = download_path(src.sha256)
    for remote in subs.remotes:
        if remote.location in subs.dropped or subs.build_deadline.passed():
            continue
        deadline = Deadline(DEADLINE, "the deadline for one source download",
                            parent=subs.build_deadline, min_rate=subs.min_rate,
                            grace=GRACE_TIMEOUTS * remote.timeout)
        try:
            fetch(remote.where(rel), dest, limit=src.limit, exact=src.size is not None,
                  sha256=src.sha256, deadline=deadline, timeout=remote.timeout)
            return True
        except Missing:
            if not remote.url and not Path(remote.location).is_dir():
                subs.dropped.add(remote.location)
                subs.warn(f"cache {remote}: no such folder; not using it in this build")
        except Unreachable as e:
            subs.dropped.add(remote.location)
            subs.warn(f"cache {remote}: {e.message}; not using it in this build")
        except FetchError as e:
            if isinstance(e, TooSlow):
                subs.dropped.add(remote.location)
            subs.warn(f"cache {remote}: source {src.basename} refused: {e.message}; "
                      "fetching it elsewhere")
    return False


def push_download(dest: Remote, path: Path, sha256: str) -> bool:
    """Upload a downloaded source file unless the cache has it; True when uploaded."""
    rel = download_path(sha256)
    if dest.exists(rel):
        return False
    dest.put(rel, path)
    return True
