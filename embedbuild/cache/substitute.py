"""Substituters: caches asked, in order, for a step's item before it is built.

An item is taken only when its description is signed by a trusted key, describes
exactly the step asked for, and its archive and every file match the description;
it then enters the store like a local build (same lock, sealing and records). Any
failure means one warning line naming the cache and the reason, and the next cache
or a local build: never a traceback, never a hang (remote.py bounds every wait)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from embedbuild.cache.archive import COMPRESSION, ArchiveError, unpack
from embedbuild.cache.downloads import fetch_download
from embedbuild.cache.keys import PublicKey, check_signature
from embedbuild.cache.push import FORMAT, description_path
from embedbuild.cache.remote import Remote, Unreachable
from embedbuild.errors import EmbedbuildError
from embedbuild.model.source import Source
from embedbuild.step import Step
from embedbuild.store import Store, hash_file


class Refused(Exception):
    """This cache's copy of an item is not taken (the reason, in words)."""


class Substituters:
    """The caches to try, the keys trusted, and where warnings and progress go.

    ``warn(line)`` gets one line per refusal; ``progress(step, cache, done, total)``
    is called as an archive downloads."""

    def __init__(self, remotes: list[Remote], trusted: dict[str, PublicKey],
                 warn: Callable[[str], None],
                 progress: Callable[[Step, str, int, int], None] | None = None) -> None:
        self.remotes = remotes
        self.trusted = trusted
        self.warn = warn
        self.progress = progress or (lambda step, cache, done, total: None)
        # Caches not asked again in this run: down, not answering, or signed by a
        # key nobody here trusts (every item would be refused alike).
        self.dropped: set[str] = set()

    def substitute(self, store: Store, step: Step) -> tuple[Path, Remote, float] | None:
        """The step's item fetched into store from the first cache that has a good
        copy, with that cache and the seconds it took; None when no cache has one."""
        for remote in self.remotes:
            if remote.location in self.dropped:
                continue
            t0 = time.monotonic()
            try:
                desc = remote.get_json(description_path(step.key))
                if desc is None:
                    continue
                self._check(desc, step)
                return self._fetch(store, step, remote, desc), remote, time.monotonic() - t0
            except Unreachable as e:
                self.dropped.add(remote.location)
                self.warn(f"cache {remote}: {e}; not using it in this build")
            except Refused as e:
                if str(e).endswith("a key not trusted here"):
                    self.dropped.add(remote.location)
                self.warn(f"cache {remote}: {step.name} refused: {e}; building it locally")
            except ValueError as e:
                self.warn(f"cache {remote}: {step.name} refused: unreadable description "
                          f"({e}); building it locally")
        return None

    def fetch_download(self, src: Source, dest: Path) -> bool:
        """A source file by its locked sha256 from the first cache holding it, into dest
        (see cache/downloads.py); True when dest holds the locked bytes."""
        return fetch_download(self.remotes, src, dest, self.warn, self.dropped)

    def _check(self, desc: object, step: Step) -> None:
        if not isinstance(desc, dict):
            raise Refused("its description is not a JSON object")
        why = check_signature(desc, self.trusted)
        if why:
            raise Refused(why)
        if desc.get("format") != FORMAT:
            raise Refused(f"description format {desc.get('format')!r}, this embedbuild "
                          f"reads {FORMAT}")
        info = desc.get("info")
        if (desc.get("key") != step.key or not isinstance(info, dict)
                or info.get("key") != step.key or info.get("name") != step.name):
            raise Refused("its description is for another step")
        archive = desc.get("archive")
        if not isinstance(archive, dict) or archive.get("compression") != COMPRESSION:
            raise Refused("its archive is not a tar.zst")
        if not isinstance(desc.get("files"), dict):
            raise Refused("its description lists no files")

    def _fetch(self, store: Store, step: Step, remote: Remote, desc: dict) -> Path:
        archive = desc["archive"]
        total = archive.get("size", 0)

        def build(out: Path, log: Path) -> None:
            tmp = out.with_name("archive")
            try:
                self.progress(step, remote.location, 0, total)
                remote.download(archive["path"], tmp,
                                lambda done: self.progress(step, remote.location, done, total))
                size = tmp.stat().st_size
                if size != total:
                    raise Refused(f"its archive has {size:,} bytes, its description says "
                                  f"{total:,} (truncated or changed)")
                if hash_file(tmp) != archive.get("sha256"):
                    raise Refused("its archive differs from its description (sha256)")
                unpack(tmp, out, desc["files"])
            except FileNotFoundError:
                raise Refused("its archive is missing") from None
            except ArchiveError as e:
                raise Refused(str(e)) from None
            finally:
                tmp.unlink(missing_ok=True)
            log.write_text(f"substituted from {remote}, archive {archive['sha256']}, "
                           f"signed by {desc['signature'].partition(':')[0]}\n")

        info = {k: v for k, v in desc["info"].items() if k != "store_format"}
        try:
            return store.realise(step.key, step.name, info, build)
        except EmbedbuildError as e:  # e.g. the archive holds what the store keeps not
            raise Refused(e.message) from None
