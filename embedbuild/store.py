"""The content-addressed store.

Layout under the store root::

    <key>-<name>/             a finished output: exactly what the step wrote, nothing of ours;
                              read-only on disk (no write, setuid, setgid or sticky bits)
    .meta/<key>-<name>/       the store's own record of it, kept out of the tree steps read
        info.json               kind, name, key, inputs, the items it was built from, and
                                store_format (items of older formats are not trusted)
        files.json              type, mode and for files sha256 and size of every entry,
                                folders included (what `verify` checks)
        origin.json             instead of files.json, for an unpacked archive: which
                                pinned archive it is; `verify` derives the files from it
        build.log               the step's log
        secret                  present for an item that holds a secret (an access
                                point's passphrase): the item and its record are then
                                readable by their owner only, and `cache push` skips it
        damage                  written by `verify` when it found damage: the problems.
                                Builds refuse a damaged item until `--repair` rebuilds it
    .tmp/<key>-<name>.<pid>/  work in progress; never trusted, removed by the next builder
    .trash/                   folders being deleted in the background (gc removes leftovers)
    .locks/<key>              flock per item: one builder at a time
    .logs/<key>-<name>.log    the log of a step while it runs (or after it failed)
    .roots/<hash>             symlinks to result links: what `gc` keeps
    .temproots/<pid>-<start>  items a running process uses (one name a line); gc keeps them
                              while that process (pid and start time) lives
    .lock                     builds hold it shared, gc and repairs exclusive
    .durations.json           each step's last build time, for progress estimates
                              (durations.py; no item depends on it)
    .noop/<hash>.json         what a build command's load and plan read, so that the same
                              command with nothing changed is answered without them
                              (noop.py; no item depends on it)

An item counts only once its metadata folder is renamed into .meta/, after the
output folder itself: a build killed at any moment leaves at most a .tmp folder
or an output without metadata, and nobody trusts either.

Every item a process looks up or builds is added to its temporary roots while it
holds the shared lock, so gc (which takes the lock exclusively) never sees an
item a running command uses without its root.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from embedbuild.bounded import FetchError, parse_json, read_file
from embedbuild.errors import EmbedbuildError, RecordError

if TYPE_CHECKING:
    from embedbuild.itemrecord import ItemInfo

META = ".meta"


# The records' models are built on first use: a no-op build (noop.py) needs none.
def read_info(path: Path) -> ItemInfo:
    from embedbuild.itemrecord import read_info

    return read_info(path)


def read_files(path: Path) -> dict[str, dict]:
    from embedbuild.itemrecord import read_files

    return read_files(path)


def _read_small_json(path: Path):
    from embedbuild.itemrecord import MAX_INFO

    return parse_json(read_file(path, limit=MAX_INFO))
# Recorded in info.json; bumped when what the store guarantees about an item changes.
STORE_FORMAT = 2
# What sealing leaves of a mode: no write bits, no setuid, setgid or sticky bit (as Nix).
SEALED_BITS = 0o555
# An item holding a secret keeps only its owner's bits: no one else reads it.
SECRET_BITS = 0o500
SECRET_MARK = "secret"

_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char device",
    stat.S_IFBLK: "block device",
}
_STORABLE = ("file", "dir", "symlink")
MAX_DAMAGE = 1 << 20  # bytes of a damage mark read back (verify writes a few lines)
MAX_TEMPROOTS = 16 << 20  # bytes of one process's temporary roots (item names, a line each)


def cache_dir(variable: str, name: str) -> Path:
    """$variable if set, else ~/.cache/embedbuild/NAME (or under $XDG_CACHE_HOME)."""
    env = os.environ.get(variable)
    if env:
        return Path(env)
    return cache_root() / name


def cache_root() -> Path:
    """~/.cache/embedbuild (or under $XDG_CACHE_HOME): the default home of the store and
    of every cache."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedbuild"


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


def _entry(full: str, st: os.stat_result) -> dict:
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "unknown")
    if kind == "symlink":
        return {"type": kind, "link": os.readlink(full)}
    out: dict = {"type": kind, "mode": stat.S_IMODE(st.st_mode)}
    if kind == "file":
        out.update(sha256=hash_file(Path(full)), size=st.st_size)
    elif kind == "dir":
        out["empty"] = not os.listdir(full)
    return out


def _scan(root: Path) -> dict[str, dict]:
    """Every entry under root (``.`` is root itself) as _entry describes it."""
    out: dict[str, dict] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        out[rel_dir] = _entry(dirpath, os.lstat(dirpath))
        # os.walk does not descend into symlinked folders; they are recorded as links.
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if not stat.S_ISDIR(st.st_mode):
                out[os.path.normpath(os.path.join(rel_dir, name))] = _entry(full, st)
    return dict(sorted(out.items()))


def tree_manifest(root: Path) -> dict[str, dict]:
    """Every entry under root (``.`` is root itself) with its type, mode, and for a file
    its sha256 and size, for a symlink its target: the store's files.json."""
    return {rel: {k: v for k, v in e.items() if k != "empty"} for rel, e in _scan(root).items()}


def _kind(entry: dict) -> str:
    # Entries derived from an archive name no type for files and symlinks.
    return entry.get("type") or ("symlink" if "link" in entry else "file")


def _differences(want: dict, have: dict) -> list[str]:
    """How an entry on disk differs from its record, in words."""
    if _kind(want) != have["type"]:
        return [f"now a {have['type']}" if have["type"] != "dir" else "now a folder"]
    out = []
    if have["type"] == "symlink" and want.get("link") != have["link"]:
        out.append(f"points to {have['link']} instead of {want.get('link')}")
    if have["type"] == "file" and (want.get("sha256"), want.get("size")) != (
        have["sha256"], have["size"]
    ):
        out.append("content")
    mode = have.get("mode")
    if mode is not None and "mode" in want and want["mode"] != mode:
        out.append(f"mode {want['mode']:04o} -> {mode:04o}")
    elif mode is not None and "exec" in want and want["exec"] != bool(mode & 0o111):
        out.append("exec bit " + ("added" if mode & 0o111 else "removed"))
    return out


def _unsafe_bits(entry: dict) -> list[str]:
    """What the store never holds, whatever a record says."""
    mode = entry.get("mode")
    if mode is None:
        return []
    out = [bit for flag, bit in ((stat.S_ISUID, "setuid bit"), (stat.S_ISGID, "setgid bit"),
                                 (stat.S_ISVTX, "sticky bit")) if mode & flag]
    if mode & 0o002:
        out.append("world-writable")
    elif mode & 0o220:
        out.append("writable")
    return out


def _damage_lines(mark: Path) -> list[str] | None:
    """What `verify` wrote into an item's damage mark; None when there is no mark. A
    mark that cannot be read is damage all the same."""
    if not os.path.lexists(mark):
        return None
    try:
        text = read_file(mark, limit=MAX_DAMAGE).decode(errors="replace")
    except FetchError as e:
        return [f"its damage mark is unreadable ({e.message})"]
    return text.splitlines() or ["(damage mark without details)"]


def _make_removable(path: Path) -> None:
    """Give every folder under path its owner's write bit back, so it can be deleted.

    Only folders: files may be hard links shared with other items (a result links the
    kernel's image), and their modes belong to those items too."""
    if path.is_symlink() or not path.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(path):
        mode = os.lstat(dirpath).st_mode
        if not mode & stat.S_IWUSR:
            os.chmod(dirpath, stat.S_IMODE(mode) | stat.S_IWUSR)


def _rmtree(path: Path, ignore_errors: bool = False) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    with contextlib.suppress(FileNotFoundError):
        _make_removable(path)
    shutil.rmtree(path, ignore_errors=ignore_errors)


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, names one process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses.
    return text[text.rindex(")") + 2:].split()[19]


class _TempRoots:
    """This process's temporary roots, one file per store: the items it uses until it exits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[Path, tuple[Path, set[str]]] = {}
        self.pid = 0

    def add(self, store_root: Path, item: Path) -> None:
        with self.lock:
            if self.pid != os.getpid():  # a forked child starts with roots of its own
                self.files.clear()
                self.pid = os.getpid()
            if store_root not in self.files:
                name = f"{self.pid}-{_start_time(self.pid)}"
                self.files[store_root] = (store_root / ".temproots" / name, set())
            path, names = self.files[store_root]
            if item.name not in names:
                with open(path, "a") as f:
                    f.write(item.name + "\n")
                names.add(item.name)

    def release(self, store_root: Path | None = None) -> None:
        with self.lock:
            if self.pid != os.getpid():
                return
            for root in [store_root] if store_root else list(self.files):
                path, _ = self.files.pop(root, (None, None))
                if path is not None:
                    path.unlink(missing_ok=True)


_TEMP_ROOTS = _TempRoots()
atexit.register(_TEMP_ROOTS.release)


class Store:
    """A content-addressed store of build outputs rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve() if root.exists() else root.absolute()
        if any(c.isspace() for c in str(self.root)):
            # kbuild and other makefiles split O=<path> at whitespace: builds would
            # write to the wrong place or fail far from the cause.
            raise EmbedbuildError(
                "the store path contains whitespace, which make splits",
                where=str(self.root),
                hint="choose a store folder without spaces: --store DIR or $EMBEDBUILD_STORE",
            )

    # -- paths -------------------------------------------------------------

    def item_path(self, key: str, name: str) -> Path:
        """Where the item with this key lives (whether or not it exists)."""
        return self.root / f"{key[:32]}-{name}"

    def meta_path(self, item: Path) -> Path:
        """The store's record of an item (info.json, files.json, build.log)."""
        return self.root / META / item.name

    def complete(self, item: Path) -> bool:
        """True when item is a finished output with its record (which may still be
        damaged: record() says)."""
        return os.path.lexists(self.meta_path(item) / "info.json") and item.is_dir()

    # -- what the store records of an item (the one way other modules read it) -----

    def record(self, item: Path) -> ItemInfo:
        """The item's info.json, validated; RecordError when it is unreadable or
        ill-typed (damage: `verify` reports it, `--repair` removes the item)."""
        return read_info(self.meta_path(item) / "info.json")

    def files(self, item: Path) -> dict[str, dict]:
        """Every entry of the item with its type, mode, and for a file its size and
        sha256, for a symlink its target (files.json). An item unpacked from a pinned
        archive records the archive instead, so its tree is read. RecordError when the
        record is unreadable or ill-typed."""
        record = self.meta_path(item) / "files.json"
        if os.path.lexists(record):
            return read_files(record)
        return tree_manifest(item)

    def origin(self, item: Path) -> dict | None:
        """For an item unpacked from a locked archive, which archive (origin.json);
        None for other items. RecordError when the record is unreadable."""
        record = self.meta_path(item) / "origin.json"
        if not os.path.lexists(record):
            return None
        try:
            data = _read_small_json(record)
        except EmbedbuildError as e:
            raise RecordError(f"{record} is unreadable: {e.message}") from None
        if not isinstance(data, dict):
            raise RecordError(f"{record} is not a JSON object")
        return data

    def secret(self, item: Path) -> bool:
        """Whether the item holds a secret (made by a step marked secret, or by one that
        depends on such a step): it is never pushed to a binary cache."""
        return os.path.lexists(self.meta_path(item) / SECRET_MARK)

    def damage(self, item: Path) -> list[str] | None:
        """The problems `verify` found in the item (it is refused until repaired); None
        when it found none."""
        return _damage_lines(self.meta_path(item) / "damage")

    def log_path(self, key: str, name: str) -> Path:
        """Where a step's log is written while it runs (and kept if it fails)."""
        return self.root / ".logs" / f"{key[:32]}-{name}.log"

    def _ensure(self) -> None:
        for sub in (".tmp", ".locks", ".logs", ".roots", ".temproots", ".trash", META):
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
        """Held by every build so that gc cannot run underneath it (may be nested)."""
        self._ensure()
        with self._flock(self.root / ".lock", fcntl.LOCK_SH):
            yield

    # -- temporary roots ---------------------------------------------------

    def add_temp_root(self, item: Path) -> Path:
        """Keep item from gc until this process exits (or calls release_temp_roots).

        Call it with the session held, so gc cannot remove the item in between."""
        _TEMP_ROOTS.add(self.root, item)
        return item

    def release_temp_roots(self) -> None:
        """This process no longer uses the items it looked up or built (for long-lived
        processes such as tests; a command's roots go when it exits)."""
        _TEMP_ROOTS.release(self.root)

    def _temp_rooted(self) -> set[Path]:
        """Items of running processes; the roots of dead ones are removed (gc's lock held)."""
        out = set()
        for f in sorted((self.root / ".temproots").iterdir()):
            pid, _, start = f.name.partition("-")
            if not pid.isdigit() or _start_time(int(pid)) != start:
                _rmtree(f)  # the process is gone (or the pid now names another one)
                continue
            try:
                text = read_file(f, limit=MAX_TEMPROOTS).decode(errors="replace")
            except FetchError:
                continue  # not a list of names: it roots nothing
            # Only item names count: a line naming anything else roots nothing.
            out.update(self.root / n for n in text.split()
                       if not n.startswith(".") and "/" not in n)
        return out

    # -- building ----------------------------------------------------------

    def _usable(self, item: Path) -> bool:
        """True for a finished item; raises for one the store must not hand out."""
        if not self.complete(item):
            return False
        try:
            self.record(item)
            damage = self.damage(item)
            if damage is None:
                return True
            found = "`embedbuild verify` found damage: " + "; ".join(damage[:3])
        except RecordError as e:
            found = f"its record {e}"
        raise EmbedbuildError(
            f"this store item is not trusted: {found}",
            where=str(item),
            hint="rebuild it: `embedbuild build BOARD --repair`, or `embedbuild verify "
            "--repair` (removes every damaged item) and build again",
        )

    def lookup(self, key: str, name: str) -> Path | None:
        """The finished item for key, rooted until this process exits; None if missing.

        Raises EmbedbuildError for an item verify found damaged or whose record is
        unreadable: damage is never trusted."""
        item = self.item_path(key, name)
        with self.session():
            return self.add_temp_root(item) if self._usable(item) else None

    def realise(
        self,
        key: str,
        name: str,
        info: dict,
        build: Callable[[Path, Path], dict | None],
        secret: bool = False,
    ) -> Path:
        """Return the item for key, building it with ``build(tmp_dir, log_path)`` if missing.

        ``build`` returns None, or for an unpacked archive its origin: then the
        expected files are derived from the pinned archive when verifying, and
        building does not read the whole tree back to hash it.

        The item is built in a private temporary folder, made read-only and renamed
        into place only when complete. Concurrent builders of the same key wait on a
        lock and then reuse the winner's output. Either way the item is rooted until
        this process exits.

        A ``secret`` item (it holds a passphrase) is built in a folder only its owner
        can enter, sealed without group and other bits, its record too, and marked so
        that `cache push` skips it.
        """
        with self.session():
            return self.add_temp_root(self._realise(key, name, info, build, secret))

    def _realise(
        self, key: str, name: str, info: dict, build: Callable[[Path, Path], dict | None],
        secret: bool = False,
    ) -> Path:
        final = self.item_path(key, name)
        if self._usable(final):
            return final
        with self._flock(self.root / ".locks" / key[:32], fcntl.LOCK_EX):
            if self._usable(final):
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
            bits = SECRET_BITS if secret else SEALED_BITS
            work.mkdir(parents=True)
            if secret:  # the scratch space and the record are in here too
                os.chmod(work, 0o700)
            tmp.mkdir()
            meta.mkdir()
            log = self.log_path(key, name)
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("")
            if secret:
                os.chmod(log, 0o600)
            try:
                origin = build(tmp, log)
                _seal(tmp, name, bits)
                if secret:
                    (meta / SECRET_MARK).write_text("")
                    os.chmod(meta, 0o700)
                if origin is not None:
                    (meta / "origin.json").write_text(json.dumps(origin, sort_keys=True))
                else:
                    files = tree_manifest(tmp)
                    files["."]["mode"] &= bits  # sealed once moved, below
                    (meta / "files.json").write_text(json.dumps(files, indent=1, sort_keys=True))
                shutil.copyfile(log, meta / "build.log")
                (meta / "info.json").write_text(
                    json.dumps({**info, "store_format": STORE_FORMAT}, indent=1, sort_keys=True)
                )
                # The output first, its record last: the record's arrival marks the
                # item complete. A folder without its write bit cannot move to another
                # parent (its ".." changes), so the top is sealed after the move.
                os.rename(tmp, final)
                os.chmod(final, stat.S_IMODE(final.stat().st_mode) & bits)
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
        # A read-only folder cannot move to another parent; its insides stay as they
        # are until the background job makes the folders writable for rm.
        with contextlib.suppress(OSError):
            if not path.is_symlink() and path.is_dir():
                os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return
        # Folders only: files may be hard links whose modes other items share.
        script = 'find "$1" -type d ! -perm -u=w -exec chmod u+w {} +; exec rm -rf -- "$1"'
        subprocess.Popen(
            ["ionice", "-c", "3", "nice", "-n", "19", "sh", "-c", script, "sh", str(dest)],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # -- result links and gc roots ----------------------------------------

    def link_result(self, item: Path, link: Path) -> None:
        """Point ``link`` at item atomically and register it as a gc root."""
        link = link.absolute()
        tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
        root = self.root / ".roots" / hashlib.sha256(str(link).encode()).hexdigest()[:32]
        # Under the shared lock: gc never sees the root half-made.
        with self.session():
            tmp.unlink(missing_ok=True)
            os.symlink(item, tmp)
            os.replace(tmp, link)
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
        """Items reachable from a result link that still points into the store, or from
        the temporary roots of a running process (call with gc's exclusive lock held).

        Raises EmbedbuildError when a reachable item's record cannot be read: what it
        depends on is then unknown, and removing anything could break it."""
        roots = []
        for r in sorted((self.root / ".roots").iterdir()):
            try:
                target = Path(os.readlink(os.readlink(r)))
            except (OSError, ValueError):
                _rmtree(r)  # the result link is gone (or r is no root at all): so is the root
                continue
            if target.parent == self.root and target.is_dir():
                roots.append(target)
        roots.extend(self._temp_rooted())
        live: set[Path] = set()
        unreadable = []
        while roots:
            item = roots.pop()
            if item in live or not self.complete(item):
                continue
            live.add(item)
            try:
                roots.extend(self.root / d for d in self.record(item).deps)
            except RecordError:
                unreadable.append(item.name)
        if unreadable:
            raise EmbedbuildError(
                "cannot tell what these items depend on, their info.json is unreadable "
                "or ill-typed: " + ", ".join(sorted(unreadable)),
                where=str(self.root / META),
                hint="nothing was removed; `embedbuild gc --repair` removes them first (or "
                "`embedbuild verify --repair` every damaged item); builds remake them",
            )
        return live

    def repair_records(self) -> list[str]:
        """Remove every item whose record is unreadable or ill-typed (under gc's
        exclusive lock, so no build is using it): what `gc` cannot get past. Returns the
        problems found, one line per item; building again remakes them."""
        self._ensure()
        problems = []
        with self._flock(self.root / ".lock", fcntl.LOCK_EX):
            for item in self.items():
                try:
                    self.record(item)
                except RecordError as e:
                    problems.append(f"{item.name}: {META}/{item.name}/info.json is "
                                    f"{e.message}: removed")
                    for half in (item, self.meta_path(item)):
                        self.discard(half)
        return problems

    def gc(self) -> tuple[int, int]:
        """Remove every item no result link or running process reaches, and all leftovers.
        Returns (items, bytes)."""
        self._ensure()
        with self._flock(self.root / ".lock", fcntl.LOCK_EX):
            keep = self.live()
            removed = freed = 0
            for p in self.root.iterdir():
                if p.name.startswith(".") or p in keep:
                    continue
                freed += _du(p)
                _rmtree(p)
                removed += 1
            for m in (self.root / META).iterdir():
                if self.root / m.name not in keep:
                    _rmtree(m)
            for sub in (".tmp", ".logs", ".locks", ".trash"):
                for p in (self.root / sub).iterdir():
                    freed += _du(p)
                    # A background rm may be removing a .trash folder too.
                    _rmtree(p, ignore_errors=sub == ".trash")
            return removed, freed

    # -- verifying and repairing --------------------------------------------

    def check(
        self, item: Path, derive: Callable[[dict], dict[str, dict]] | None = None
    ) -> tuple[list[str], bool]:
        """Check one item against its record: (problems, damaged).

        Damaged means the item must not be used: missing, changed or extra entries,
        special files, write/setuid/setgid/sticky bits, or an unreadable record. An
        item that merely cannot be checked (no way to derive its files) is not."""
        name, meta = item.name, self.meta_path(item)
        if not os.path.lexists(meta / "info.json"):
            return [f"{name}: incomplete item (no {META}/{name}/info.json)"], True
        try:
            info = read_info(meta / "info.json")
        except RecordError as e:
            return [f"{name}: {META}/{name}/info.json is {e.message}"], True
        if info.store_format != STORE_FORMAT:
            return [f"{name}: made by an older embedbuild (modes not recorded, not "
                    "read-only)"], True
        if os.path.lexists(meta / "files.json"):
            try:
                want = read_files(meta / "files.json")
            except RecordError as e:
                return [f"{name}: {META}/{name}/files.json is {e.message}"], True
        elif os.path.lexists(meta / "origin.json") and derive is not None:
            try:
                origin = _read_small_json(meta / "origin.json")
            except FetchError as e:
                return [f"{name}: {META}/{name}/origin.json is unreadable: {e.message}"], True
            try:
                want = {".": {"type": "dir"}, **derive(origin)}
            except EmbedbuildError as e:  # e.g. the archive can no longer be fetched
                return [f"{name}: cannot check it: {e}"], False
            except (LookupError, TypeError, ValueError, AttributeError) as e:
                return [f"{name}: {META}/{name}/origin.json names no usable archive: "
                        f"{e.__class__.__name__}: {e}"], True
        else:
            return [f"{name}: nothing to check it against "
                    f"(no {META}/{name}/files.json)"], False
        have = _scan(item)
        problems = []
        for rel in sorted(set(want) | set(have)):
            if rel not in have:
                problems.append(f"{name}: missing {rel}")
                continue
            h = have[rel]
            what = _unsafe_bits(h)
            if rel not in want:
                kind = {"dir": "empty folder" if h.get("empty") else "folder"}.get(h["type"])
                kind = kind or (h["type"] if h["type"] != "file" else None)
                detail = [k for k in (kind, *what) if k]
                problems.append(f"{name}: unexpected {rel}"
                                + (f" ({', '.join(detail)})" if detail else ""))
                continue
            what = _differences(want[rel], h) + what
            if what:
                problems.append(f"{name}: modified {rel} ({', '.join(what)})")
        return problems, bool(problems)

    def verify(
        self, derive: Callable[[dict], dict[str, dict]] | None = None, repair: bool = False
    ) -> list[str]:
        """Check every item (see check) and return the problems found, going on past any.

        Each damaged item is marked, so builds refuse it; an item found intact loses an
        old mark. With repair, damaged items are removed instead (under gc's exclusive
        lock, so no build is using them); the next build rebuilds them."""
        if not self.root.is_dir():
            return []
        items = [p for p in sorted(self.root.iterdir()) if not p.name.startswith(".")]
        if repair:
            return self.repair(items, derive)
        with self.session():
            return self._check_all(items, derive, repair=False)

    def repair(
        self, items: Iterable[Path], derive: Callable[[dict], dict[str, dict]] | None = None
    ) -> list[str]:
        """Check the given items that exist and remove the damaged ones (item and record),
        so that building them again rebuilds them. Returns the problems found."""
        self._ensure()
        with self._flock(self.root / ".lock", fcntl.LOCK_EX):
            return self._check_all([p for p in items if p.exists()], derive, repair=True)

    def _check_all(
        self,
        items: list[Path],
        derive: Callable[[dict], dict[str, dict]] | None,
        repair: bool,
    ) -> list[str]:
        problems = []
        for item in items:
            found, damaged = self.check(item, derive)
            problems += found
            mark = self.meta_path(item) / "damage"
            if damaged and repair:
                for half in (item, self.meta_path(item)):
                    if half.exists():
                        self.discard(half)
            elif damaged and mark.parent.is_dir() and not mark.parent.is_symlink():
                tmp = mark.with_name(f"damage.tmp{os.getpid()}")
                tmp.write_text("".join(p.removeprefix(f"{item.name}: ") + "\n"
                                       for p in found))
                if mark.is_dir() and not mark.is_symlink():
                    _rmtree(mark)
                os.replace(tmp, mark)
            elif not damaged and os.path.lexists(mark):
                _rmtree(mark)
        return problems


def _seal(tree: Path, step: str, bits: int = SEALED_BITS) -> None:
    """Make a finished output read-only below its top folder (the caller seals that
    after moving it) and refuse what the store cannot keep (as Nix does): special
    files; setuid, setgid and sticky bits are dropped with the write bits (and a
    secret item's group and other bits: ``bits``).

    Files that are hard links into other items are already sealed and left alone.
    Folder descriptors (fwalk) spare the kernel resolving every path anew: sealing an
    unpacked kernel source (78k files) takes under a second on an idle machine."""
    for dirpath, dirnames, filenames, dfd in os.fwalk(tree):
        for n in dirnames + filenames:
            st = os.stat(n, dir_fd=dfd, follow_symlinks=False)
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "unknown")
            if kind == "symlink":
                continue
            if kind not in _STORABLE:
                raise EmbedbuildError(
                    f"its output holds a {kind}, "
                    f"{os.path.relpath(os.path.join(dirpath, n), tree)}, which the store "
                    "does not keep",
                    where=f"step {step}",
                    hint="store items hold only files, folders and symlinks; put device "
                    "nodes and fifos into the image through an overlay's attribute file",
                )
            if bits != SEALED_BITS and kind == "file" and st.st_nlink > 1:
                # A hard link into another item (the result's): its mode is that item's
                # too, so a secret item takes a copy of its own.
                _unshare(os.path.join(dirpath, n))
                st = os.stat(n, dir_fd=dfd, follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            if mode & ~bits:
                os.chmod(n, mode & bits, dir_fd=dfd)


def _unshare(path: str) -> None:
    """Replace a hard-linked file by a copy of its own (same bytes and mode)."""
    tmp = f"{path}.unshare{os.getpid()}"
    shutil.copy2(path, tmp)
    os.replace(tmp, path)


def _du(p: Path) -> int:
    if p.is_symlink() or not p.is_dir():
        try:
            return p.lstat().st_size
        except FileNotFoundError:  # in .trash, a background rm may have been first
            return 0
    total = 0
    for dirpath, _dirs, files in os.walk(p):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total
