"""The content-addressed store.

Layout under the store root::

    <key>-<name>/             a finished output: exactly what the step wrote, nothing of ours
    .meta/<key>-<name>/       the store's own record of it, kept out of the tree steps read
        info.json               kind, name, key, inputs and the items it was built from
        files.json              sha256, size and mode of every file (what `verify` checks)
        origin.json             instead of files.json, for an unpacked archive: which
                                pinned archive it is; `verify` derives the files from it
        build.log               the step's log
    .tmp/<key>-<name>.<pid>/  work in progress; never trusted, removed by the next builder
    .trash/                   folders being deleted in the background (gc removes leftovers)
    .locks/<key>              flock per item: one builder at a time
    .logs/<key>-<name>.log    the log of a step while it runs (or after it failed)
    .roots/<hash>             symlinks to result links: what `gc` keeps
    .lock                     builds hold it shared, gc exclusive

An item counts only once its metadata folder is renamed into .meta/, after the
output folder itself: a build killed at any moment leaves at most a .tmp folder
or an output without metadata, and nobody trusts either.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from embedbuild.errors import EmbedbuildError

META = ".meta"


def cache_dir(variable: str, name: str) -> Path:
    """$variable if set, else ~/.cache/embedbuild/NAME (or under $XDG_CACHE_HOME)."""
    env = os.environ.get(variable)
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "embedbuild" / name


def default_root() -> Path:
    """$EMBEDBUILD_STORE, else ~/.cache/embedbuild/store."""
    return cache_dir("EMBEDBUILD_STORE", "store")


def hash_file(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tree_manifest(root: Path) -> dict[str, dict]:
    """Every file and symlink under root with what identifies it."""
    out: dict[str, dict] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames.sort()
        for name in sorted(filenames) + [
            d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        ]:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = {"link": os.readlink(full)}
            elif stat.S_ISREG(st.st_mode):
                out[rel] = {
                    "sha256": hash_file(Path(full)),
                    "size": st.st_size,
                    "exec": bool(st.st_mode & 0o111),
                }
    return out


class Store:
    """A content-addressed store of build outputs rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve() if root.exists() else root.absolute()

    # -- paths -------------------------------------------------------------

    def item_path(self, key: str, name: str) -> Path:
        """Where the item with this key lives (whether or not it exists)."""
        return self.root / f"{key[:32]}-{name}"

    def meta_path(self, item: Path) -> Path:
        """The store's record of an item (info.json, files.json, build.log)."""
        return self.root / META / item.name

    def complete(self, item: Path) -> bool:
        """True when item is a finished output with its record."""
        return (self.meta_path(item) / "info.json").is_file() and item.is_dir()

    def info(self, item: Path) -> dict:
        """An item's info.json."""
        return json.loads((self.meta_path(item) / "info.json").read_text())

    def has(self, key: str, name: str) -> bool:
        """True when a finished item exists for this key."""
        return self.complete(self.item_path(key, name))

    def log_path(self, key: str, name: str) -> Path:
        return self.root / ".logs" / f"{key[:32]}-{name}.log"

    def _ensure(self) -> None:
        for sub in (".tmp", ".locks", ".logs", ".roots", ".trash", META):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- locking -----------------------------------------------------------

    @contextlib.contextmanager
    def _flock(self, path: Path, mode: int) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Held by every build so that gc cannot run underneath it."""
        self._ensure()
        with self._flock(self.root / ".lock", fcntl.LOCK_SH):
            yield

    # -- building ----------------------------------------------------------

    def realise(
        self,
        key: str,
        name: str,
        info: dict,
        build: Callable[[Path, Path], dict | None],
    ) -> Path:
        """Return the item for key, building it with ``build(tmp_dir, log_path)`` if missing.

        ``build`` returns None, or for an unpacked archive its origin: then the
        expected files are derived from the pinned archive when verifying, and
        building does not read the whole tree back to hash it.

        The item is built in a private temporary folder and renamed into place
        only when complete. Concurrent builders of the same key wait on a lock
        and then reuse the winner's output.
        """
        final = self.item_path(key, name)
        if self.has(key, name):
            return final
        self._ensure()
        with self._flock(self.root / ".locks" / key[:32], fcntl.LOCK_EX):
            if self.has(key, name):
                return final
            # We hold the lock, so any temporary folder for this key is a
            # leftover of a killed build, and so is an output or a record alone.
            for stale in (self.root / ".tmp").glob(f"{key[:32]}-*"):
                self.discard(stale)
            for half in (final, self.meta_path(final)):
                if half.exists():
                    self.discard(half)
            work = self.root / ".tmp" / f"{key[:32]}-{name}.{os.getpid()}"
            tmp, meta = work / "out", work / "meta"
            tmp.mkdir(parents=True)
            meta.mkdir()
            log = self.log_path(key, name)
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("")
            try:
                origin = build(tmp, log)
                if origin is not None:
                    (meta / "origin.json").write_text(json.dumps(origin, sort_keys=True))
                else:
                    (meta / "files.json").write_text(
                        json.dumps(tree_manifest(tmp), indent=1, sort_keys=True)
                    )
                shutil.copyfile(log, meta / "build.log")
                (meta / "info.json").write_text(json.dumps(info, indent=1, sort_keys=True))
                # The output first, its record last: the record's arrival marks the
                # item complete.
                os.rename(tmp, final)
                os.rename(meta, self.meta_path(final))
            except BaseException:
                self.discard(work)
                raise
            os.rmdir(work)
            log.unlink(missing_ok=True)
            return final

    def discard(self, path: Path) -> None:
        """Delete a folder of the store without waiting for it: it moves into .trash at
        once and a detached low-priority rm removes it (deleting a kernel's object
        tree takes seconds nobody needs to wait for; gc removes what a crash left)."""
        self._ensure()
        dest = self.root / ".trash" / f"{path.name}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return
        subprocess.Popen(
            ["ionice", "-c", "3", "nice", "-n", "19", "rm", "-rf", "--", str(dest)],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # -- result links and gc roots ----------------------------------------

    def link_result(self, item: Path, link: Path) -> None:
        """Point ``link`` at item atomically and register it as a gc root."""
        self._ensure()
        link = link.absolute()
        tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(item, tmp)
        os.replace(tmp, link)
        root = self.root / ".roots" / hashlib.sha256(str(link).encode()).hexdigest()[:32]
        if not (root.is_symlink() and os.readlink(root) == str(link)):
            rtmp = root.with_name(root.name + f".tmp{os.getpid()}")
            rtmp.unlink(missing_ok=True)
            os.symlink(link, rtmp)
            os.replace(rtmp, root)

    def items(self) -> list[Path]:
        """Every finished item."""
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir() if not p.name.startswith(".") and self.complete(p)
        )

    def live(self) -> set[Path]:
        """Items reachable from a result link that still points into the store."""
        roots = []
        rdir = self.root / ".roots"
        for r in sorted(rdir.iterdir()) if rdir.is_dir() else []:
            try:
                target = Path(os.readlink(os.readlink(r)))
            except OSError:
                r.unlink()  # the result link is gone: so is the root
                continue
            if target.parent == self.root and target.is_dir():
                roots.append(target)
        live: set[Path] = set()
        while roots:
            item = roots.pop()
            if item in live or not self.complete(item):
                continue
            live.add(item)
            roots.extend(self.root / d for d in self.info(item).get("deps", []))
        return live

    def gc(self) -> tuple[int, int]:
        """Remove every item no result link reaches, and all leftovers. Returns (items, bytes)."""
        self._ensure()
        with self._flock(self.root / ".lock", fcntl.LOCK_EX):
            keep = self.live()
            removed = freed = 0
            for p in self.root.iterdir():
                if p.name.startswith(".") or p in keep:
                    continue
                freed += _du(p)
                shutil.rmtree(p)
                removed += 1
            for m in (self.root / META).iterdir():
                if self.root / m.name not in keep:
                    shutil.rmtree(m)
            for sub in (".tmp", ".logs", ".locks", ".trash"):
                for p in (self.root / sub).iterdir():
                    freed += _du(p)
                    if p.is_dir() and not p.is_symlink():
                        # A background rm may be removing it too.
                        shutil.rmtree(p, ignore_errors=sub == ".trash")
                    else:
                        p.unlink()
            return removed, freed

    def verify(self, derive: Callable[[dict], dict[str, dict]] | None = None) -> list[str]:
        """Re-hash every item against its files.json, or against the files ``derive``
        gives for its origin.json; return the problems found."""
        problems = []
        if not self.root.is_dir():
            return problems
        for p in sorted(self.root.iterdir()):
            if p.name.startswith("."):
                continue
            meta = self.meta_path(p)
            if not (meta / "info.json").is_file():
                problems.append(f"{p.name}: incomplete item (no {META}/{p.name}/info.json)")
                continue
            if (meta / "files.json").is_file():
                want = json.loads((meta / "files.json").read_text())
            elif (meta / "origin.json").is_file() and derive is not None:
                try:
                    want = derive(json.loads((meta / "origin.json").read_text()))
                except EmbedbuildError as e:  # e.g. the archive can no longer be fetched
                    problems.append(f"{p.name}: cannot check it: {e}")
                    continue
            else:
                problems.append(f"{p.name}: nothing to check it against "
                                f"(no {META}/{p.name}/files.json)")
                continue
            have = tree_manifest(p)
            for rel in sorted(set(want) | set(have)):
                if rel not in have:
                    problems.append(f"{p.name}: missing {rel}")
                elif rel not in want:
                    problems.append(f"{p.name}: unexpected {rel}")
                elif want[rel] != have[rel]:
                    problems.append(f"{p.name}: modified {rel}")
        return problems


def _du(p: Path) -> int:
    if p.is_symlink() or not p.is_dir():
        return p.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(p):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total

