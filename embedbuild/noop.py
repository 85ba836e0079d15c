"""A no-op build answered without loading or planning the board.

Loading and planning cost about a second of imports and validation, more than a whole
no-op build may take. So a build records what its load and plan read: every file
opened, the folders those files sit in and the folders listed, the host facts
hostprobe.py stamped, embedbuild's own files, and every store item of the graph. The
next build with the same arguments and environment whose recorded files and folders are
all unchanged (size, times, inode) and whose items are all in the store (finished,
with a record, no damage mark) only links the result. Anything else (a file touched,
added or removed beside one read, an item gone or damaged, a changed variable) takes
the full path, which rebuilds or says what is wrong. The memo lives in the store
(.noop/); a damaged one is ignored."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

from embedbuild import hostprobe

MAX_MEMO = 4 << 20  # bytes of one memo read back
PACKAGE = Path(__file__).resolve().parent
# Variables that can change what a build plans or where it looks: all of ours, and
# where tools and the user's caches are found.
ENVIRONMENT = ("PATH", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")


def _stamp(path: str) -> list[object] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size if not os.path.isdir(path) else 0, st.st_mtime_ns, st.st_ctime_ns,
            st.st_ino]


def _package_files() -> list[str]:
    """embedbuild's own files (code, templates): a new version plans differently."""
    out = []
    for d, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        out += [os.path.join(d, f) for f in sorted(files)]
    return out


class Recorder:
    """Collects the files opened and folders listed while active (a Python audit hook:
    it sees every open() of this process, whoever calls it)."""

    _active: Recorder | None = None
    _installed = False
    _lock = threading.Lock()

    def __init__(self, skip: list[Path]) -> None:
        # Never inputs: the store (items are checked by key), Python's own files.
        self.skip = tuple(str(p) + os.sep for p in
                          {*skip, Path(sys.prefix), Path(sys.base_prefix),
                           Path(sys.exec_prefix), Path("/proc"), Path("/sys"), Path("/dev")})
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        rec = cls._active
        if rec is None or event not in ("open", "os.listdir", "os.scandir"):
            return
        path = args[0] if args else None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        elif isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str):
            return  # a descriptor: what it names was recorded when it was opened
        if event == "open":
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            if any(c in mode for c in "wax+"):
                return
        path = os.path.abspath(path)
        if path.startswith(rec.skip) or "/__pycache__/" in path:
            return
        (rec.files if event == "open" else rec.dirs).add(path)

    def __enter__(self) -> Recorder:
        with Recorder._lock:
            if not Recorder._installed:
                sys.addaudithook(Recorder._hook)
                Recorder._installed = True
            Recorder._active = self
        return self

    def __exit__(self, *exc) -> None:
        Recorder._active = None

    def inputs(self) -> dict[str, list[object] | None]:
        """Every recorded path (and the folder of each file) with its stamp now."""
        files = {f for f in self.files if os.path.isfile(f)}
        # Every file a host fact of this process was stamped with (a fact is computed
        # once per process, maybe before this recording began).
        files |= set(hostprobe.consulted) | set(_package_files())
        dirs = self.dirs | {os.path.dirname(f) for f in files}
        dirs |= {d for d in os.environ.get("PATH", "").split(os.pathsep) if d}
        return {p: _stamp(p) for p in sorted(files | dirs)}


class Memo:
    """The memo of one build command (its arguments and environment) in a store."""

    def __init__(self, store_root: Path, request: dict[str, object]) -> None:
        env = {k: v for k, v in sorted(os.environ.items())
               if k.startswith("EMBEDBUILD_") or k in ENVIRONMENT}
        text = json.dumps({"request": request, "env": env, "cwd": os.getcwd(),
                           "python": sys.executable}, sort_keys=True)
        self.store_root = store_root
        self.path = store_root / ".noop" / f"{hashlib.sha256(text.encode()).hexdigest()}.json"

    def _read(self) -> dict | None:
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_MEMO + 1)
            data = json.loads(raw) if len(raw) <= MAX_MEMO else None
        except (OSError, ValueError, RecursionError):
            return None
        if not (isinstance(data, dict) and isinstance(data.get("inputs"), dict)
                and isinstance(data.get("items"), list) and isinstance(data.get("out"), str)
                and isinstance(data.get("warnings"), list)
                and all(isinstance(w, str) for w in data["warnings"])
                and all(isinstance(i, str) and "/" not in i and not i.startswith(".")
                        for i in data["items"])):
            return None
        return data

    def answer(self) -> tuple[Path, list[str]] | None:
        """The result item and the warnings the planning gave, when nothing the last
        build read has changed and its items are all present and undamaged; else None."""
        data = self._read()
        if data is None or not data["items"]:
            return None
        for path, stamp in data["inputs"].items():
            if _stamp(path) != stamp:
                return None
        if {str(p) for p in _package_files()} - data["inputs"].keys():
            return None  # a file of embedbuild's was added since
        for name in data["items"]:
            if not _usable(self.store_root, name):
                return None
        out = self.store_root / data["out"]
        if out.name not in data["items"]:
            return None
        return out, data["warnings"]

    def save(self, rec: Recorder, items: list[Path], out: Path, warnings: list[str]) -> None:
        """Record a finished build (best effort: without a memo, the next no-op build
        only takes longer)."""
        entry = {"inputs": rec.inputs(), "items": sorted({i.name for i in items}),
                 "out": out.name, "warnings": warnings}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".memo-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(entry, f)
                os.replace(tmp, self.path)
            except OSError:
                os.unlink(tmp)
                raise


def _usable(root: Path, name: str) -> bool:
    """The item is finished, has a record that parses, and verify marked no damage (the
    full path validates the record itself and refuses damage with its reasons)."""
    item, meta = root / name, root / ".meta" / name
    if not item.is_dir() or os.path.lexists(meta / "damage"):
        return False
    try:
        with (meta / "info.json").open("rb") as f:
            info = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(info, dict) and info.get("name") is not None
