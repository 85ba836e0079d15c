"""Facts about the build host's tools (version lines, the Debian packages that own them),
remembered between runs. Probing them costs a dozen subprocesses (0.8 s), more than a
whole no-op build may take. A fact is reused only while dpkg's database and every file
it was read from are unchanged (same path, size, mtime and inode); anything else, or a
memo that does not read back as what we wrote, probes again."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from embedbuild.store import cache_dir

DPKG_STATUS = Path("/var/lib/dpkg/status")
# A memo larger than this is not ours to read: probe instead.
MAX_BYTES = 1 << 20
Fact = str | dict[str, str]
# Every file a fact of this process was stamped with: a no-op build (noop.py) checks
# them too.
consulted: set[str] = set()


def _stamp(path: Path) -> list[object]:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns, st.st_ino]


def _memo_file() -> Path:
    return cache_dir("EMBEDBUILD_PROBE_CACHE", "hostprobe.json")


def _read() -> dict[str, object]:
    try:
        with _memo_file().open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return {}
        data = json.loads(raw or b"{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _valid(value: object) -> bool:
    return isinstance(value, str) or (
        isinstance(value, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()))


def remembered(name: str, files: list[str], probe: Callable[[], Fact]) -> Fact:
    """``probe()``, or what it returned last time while dpkg's database and ``files``
    (resolved) are as they were then."""
    paths = [DPKG_STATUS, *(Path(f).resolve() for f in files if f)]
    consulted.update(str(p) for p in paths)
    stamp = [_stamp(p) for p in paths]
    entry = _read().get(name)
    if (isinstance(entry, dict) and entry.get("stamp") == stamp
            and _valid(entry.get("value"))):
        return entry["value"]
    value = probe()
    _write(name, {"stamp": stamp, "value": value})
    return value


def _write(name: str, entry: dict[str, object]) -> None:
    """Best effort: a memo that cannot be written costs the probe next time, nothing more."""
    path = _memo_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**_read(), name: entry}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hostprobe-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise
