"""Substituters: caches asked, in order, for a step's item before it is built.

An item is taken only when its description (bounded in bytes, time and nesting) is
signed by a trusted key, passes the one model of a description in full, and describes
exactly the step asked for; there must be room for it; its archive (bounded by the
signed size and the deadline) must match the signed sha256, and every file its
description. It then enters the store like a local build (same lock, sealing and
records). Anything else is a typed Refused result: one warning line naming the cache
and the reason, and the next cache or a local build: never a traceback, never a hang."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from embedbuild.bounded import (
    Deadline,
    FetchError,
    Malformed,
    Mismatch,
    Missing,
    NotAFile,
    TooLarge,
    TooSlow,
    Truncated,
    Unreachable,
)
from embedbuild.cache.archive import ArchiveError, unpack
from embedbuild.cache.description import (
    EXPANSION_FLOOR,
    FORMAT,
    MAX_EXPANSION,
    Description,
    DescriptionError,
    description_path,
    validate,
)
from embedbuild.cache.downloads import fetch_download
from embedbuild.cache.keys import PublicKey, check_signature
from embedbuild.cache.remote import Remote
from embedbuild.errors import EmbedbuildError
from embedbuild.model.source import Source
from embedbuild.step import Step
from embedbuild.store import Store

# Seconds one item (description and archive) may take at most, and all fetches of one
# build. Within that, an item must keep up MIN_RATE bytes a second on average once
# GRACE_TIMEOUTS times the cache's timeout have passed: a cache sending a byte a second
# costs 15 s by default, not the whole deadline.
ITEM_DEADLINE = 600.0
BUILD_DEADLINE = 3600.0
MIN_RATE = 64 << 10
GRACE_TIMEOUTS = 3
# Space left free in the store after an item is unpacked.
RESERVE = 64 << 20


class Fetched(NamedTuple):
    """A step's item taken from a cache."""

    item: Path
    cache: Remote
    seconds: float


@dataclass(frozen=True)
class Refused:
    """A cache's copy of an item not taken.

    Args:
        cache: the cache asked.
        step: the name of the step whose item it was.
        reason: why, in words.
        drop: the cache is not asked again in this build: it is down, silent or too
            slow, or it signs with a key nobody here trusts (every item would fail alike).
        down: the cache could not be asked at all (the warning names the cache alone).
    """

    cache: Remote
    step: str
    reason: str
    drop: bool = False
    down: bool = False

    def line(self) -> str:
        """The warning line the user sees."""
        if self.down:
            return f"cache {self.cache}: {self.reason}; not using it in this build"
        return f"cache {self.cache}: {self.step} refused: {self.reason}; building it locally"


class _Refusal(Exception):
    """Raised inside one attempt; becomes a Refused result."""

    def __init__(self, reason: str, drop: bool = False, down: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.drop, self.down = reason, drop or down, down


def _what(e: FetchError, thing: str, size: int | None = None) -> _Refusal:
    """A failed fetch of ``thing`` ('its description', 'its archive') as a refusal."""
    if isinstance(e, Unreachable):
        return _Refusal(e.message, down=True)
    if isinstance(e, TooSlow):
        return _Refusal(f"{thing} is too slow: {e.message}", drop=True)
    if isinstance(e, Missing):
        return _Refusal(f"{thing} is missing")
    if isinstance(e, Truncated):
        return _Refusal(f"{thing} has {e.message}; its description says {size:,} bytes "
                        "(truncated or changed)")
    if isinstance(e, TooLarge):
        limit = f"the {size:,} bytes its description says" if size is not None else (
            "the largest description taken")
        return _Refusal(f"{thing} is larger than {limit} (not read further)")
    if isinstance(e, Mismatch):
        return _Refusal(f"{thing} differs from its description (sha256)")
    if isinstance(e, NotAFile):
        return _Refusal(f"{thing} is {e.message}")
    if isinstance(e, Malformed):
        return _Refusal(f"unreadable description ({e.message})")
    return _Refusal(f"{thing}: {e.message}")


class Substituters:
    """The caches to try, the keys trusted, and where warnings and progress go.

    ``warn(line)`` gets one line per refusal; ``progress(step, cache, done, total)``
    is called as an archive downloads. Each item must arrive within ``deadline``
    seconds, at ``min_rate`` bytes a second on average after a grace of GRACE_TIMEOUTS
    times its cache's timeout (0: no rate asked), and all items of this build within
    ``build_deadline`` (counted from here); after that, everything is built locally."""

    def __init__(self, remotes: list[Remote], trusted: dict[str, PublicKey],
                 warn: Callable[[str], None],
                 progress: Callable[[Step, str, int, int], None] | None = None,
                 deadline: float = ITEM_DEADLINE,
                 build_deadline: float = BUILD_DEADLINE,
                 min_rate: float = MIN_RATE) -> None:
        self.remotes = remotes
        self.trusted = trusted
        self.warn = warn
        self.progress = progress or (lambda step, cache, done, total: None)
        self.deadline = deadline
        self.min_rate = min_rate
        self.build_deadline = Deadline(build_deadline, "the time for all cache fetches "
                                       "of this build")
        # Caches not asked again in this run: down, not answering, too slow, or signed
        # by a key nobody here trusts (every item would be refused alike).
        self.dropped: set[str] = set()

    def substitute(self, store: Store, step: Step) -> Fetched | None:
        """The step's item fetched into store from the first cache that has a good
        copy, with that cache and the seconds it took; None when no cache has one
        (each cache that refused it said why in one warning line)."""
        for remote in self.remotes:
            if remote.location in self.dropped or self.build_deadline.passed():
                continue
            got = self.attempt(store, step, remote)
            if isinstance(got, Refused):
                if got.drop:
                    self.dropped.add(remote.location)
                self.warn(got.line())
            elif got is not None:
                return got
        return None

    def fetch_download(self, src: Source, dest: Path) -> bool:
        """A source file by its locked sha256 from the first cache holding it, into dest
        (see cache/downloads.py); True when dest holds the locked bytes."""
        return fetch_download(self.remotes, src, dest, dropped=self.dropped, warn=self.warn,
                              build_deadline=self.build_deadline, min_rate=self.min_rate,
                              grace_timeouts=GRACE_TIMEOUTS)

    def attempt(self, store: Store, step: Step, remote: Remote) -> Fetched | Refused | None:
        """Ask one cache for the step's item: Fetched, Refused (and why), or None when
        the cache does not have it."""
        t0 = time.monotonic()
        deadline = Deadline(self.deadline, "the deadline for one item",
                            parent=self.build_deadline, min_rate=self.min_rate,
                            grace=GRACE_TIMEOUTS * remote.timeout)
        try:
            try:
                data = remote.get_json(description_path(step.key), deadline)
            except FetchError as e:
                raise _what(e, "its description") from None
            if data is None:
                return None
            desc = self._check(data, step, store)
            self._room(store, desc)
            item = self._fetch(store, step, remote, desc, deadline)
            return Fetched(item, remote, time.monotonic() - t0)
        except _Refusal as r:
            return Refused(remote, step.name, r.reason, r.drop, r.down)

    def _check(self, data: object, step: Step, store: Store) -> Description:
        """The description, validated in full and matched to the step, before any byte
        of the archive is read."""
        if not isinstance(data, dict):
            raise _Refusal("its description is not a JSON object")
        bad = check_signature(data, self.trusted)
        if bad is not None:
            raise _Refusal(bad.reason, drop=bad.untrusted_signer)
        if data.get("format") != FORMAT:
            raise _Refusal(f"description format {str(data.get('format'))[:20]!r}, this "
                           f"embedbuild reads {FORMAT}")
        try:
            desc = validate(data)
        except DescriptionError as e:
            raise _Refusal(str(e)) from None
        info = desc.info
        deps = [store.item_path(d.key, d.name).name for d in step.deps.values()]
        if (desc.key, desc.name, info.kind, info.version, info.outputs, info.deps) != (
                step.key, step.name, step.kind, step.version, step.outputs, deps):
            raise _Refusal("its description is for another step")
        return desc

    def _room(self, store: Store, desc: Description) -> None:
        """Refused unless the item expands no more than a description may say, and the
        store has room for the archive and the unpacked tree: before a byte of it."""
        if desc.size > desc.expansion_allowed():
            raise _Refusal(f"it would unpack to {desc.size:,} bytes from a "
                           f"{desc.archive.size:,}-byte archive, more than the "
                           f"{MAX_EXPANSION}-fold (or {EXPANSION_FLOOR >> 20} MiB) taken")
        need = desc.archive.size + desc.space_needed() + RESERVE
        where = store.root
        while not where.exists():  # a store not made yet: the disk it will be on
            where = where.parent
        free = shutil.disk_usage(where).free
        if need > free:
            raise _Refusal(f"not enough free space in the store for it: it needs "
                           f"{need / 2**20:,.1f} MiB (archive, unpacked files and "
                           f"{RESERVE >> 20} MiB to spare), {free / 2**20:,.1f} MiB are "
                           "free")

    def _fetch(self, store: Store, step: Step, remote: Remote, desc: Description,
               deadline: Deadline) -> Path:
        archive = desc.archive
        files = desc.files_record()

        def build(out: Path, log: Path) -> None:
            tmp = out.with_name("archive")
            try:
                self.progress(step, remote.location, 0, archive.size)
                remote.download(archive.path, tmp, size=archive.size, sha256=archive.sha256,
                                deadline=deadline,
                                progress=lambda done: self.progress(step, remote.location,
                                                                    done, archive.size))
                unpack(tmp, out, files)
            except FetchError as e:
                raise _what(e, "its archive", archive.size) from None
            except ArchiveError as e:
                raise _Refusal(str(e)) from None
            finally:
                tmp.unlink(missing_ok=True)
            log.write_text(f"substituted from {remote}, archive {archive.sha256}, "
                           f"signed by {desc.signature.partition(':')[0]}\n")

        # The record is the step's own, as a local build writes it; the description
        # only had to agree with it.
        info = {"kind": step.kind, "name": step.name, "key": step.key,
                "version": step.version, "inputs": step.inputs, "outputs": step.outputs,
                "deps": desc.info.deps}
        try:
            return store.realise(step.key, step.name, info, build)
        except EmbedbuildError as e:  # e.g. the archive holds what the store keeps not
            raise _Refusal(e.message) from None
        except OSError as e:  # this machine's: a full disk, a permission
            raise _Refusal(f"cannot store it here: {e.strerror or e}") from None
