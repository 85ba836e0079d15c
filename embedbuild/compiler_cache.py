"""The compiler cache: compile steps run their compilers through ccache.

A step lists the compilers it runs (``Step.compilers``); for such a step the
scheduler puts a folder first on PATH whose entries with those names are links
to ccache (ccache's masquerade mode), so make and configure scripts run
unchanged and the make command line is the same with and without the cache.
ccache is no input of a step: it must not change a byte of any output, so it is
not part of any store key.

Hits across folders and stores: steps build in a scratch folder inside the
store, so every absolute path in a compile names the store. ``base_dir`` (the
store root) makes ccache rewrite those paths relative to the compiler's working
folder, which is the same in every store (``.tmp/ITEM/out.scratch`` to
``ITEM/...``), so two stores and two scratch folders hash alike. Those relative
paths reach the compiler too (``__FILE__``, debug info), so a step that maps its
absolute folders away with ``-ffile-prefix-map`` maps their relative form the
same way (``as_compiled``). ``hash_dir`` stays on: a compile with debug
info hashes its working folder (after the prefix maps), so a folder that leaks
into an object can never come back from another folder's compile.

``compiler_check`` is ``content``: ccache's default (``mtime``) hashes the
compiler, and a ``-specs=`` file, by size and modification time only. The libc
builds' specs file is staged anew into every build's sysroot, with the time its
libc item was made (another in every store: every such compile missed from a
second store), and items fetched from a binary cache all have time 0 (two specs
of one size would share objects). By content, the same specs hit in every store
and another specs never does; hashing the compiler driver (about 1.4 MB) costs
about a millisecond per compile.

Where the cache lives: $EMBEDBUILD_CCACHE_DIR, else ~/.cache/embedbuild/ccache.
ccache reads its own ccache.conf there (ccache's settings, e.g. ``max_size`` or
``remote_storage``); $EMBEDBUILD_CCACHE_REMOTE sets ccache's ``remote_storage``
(an http:// or redis:// URL, or file:FOLDER) and wins over that file.
``--no-ccache`` or EMBEDBUILD_NO_CCACHE=1 turn the cache off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedbuild.command import Runner
from embedbuild.errors import EmbedbuildError
from embedbuild.store import cache_dir

MISSING = ("ccache not found: building without a compiler cache "
           "(tools/setup installs it; --no-ccache silences this)")


@dataclass(frozen=True)
class CompilerCache:
    """ccache as the compile steps use it.

    Args:
        ccache: the ccache program.
        dir: ccache's cache folder (and its ccache.conf).
        remote: ccache's ``remote_storage`` setting, when given by EMBEDBUILD_CCACHE_REMOTE.
    """

    ccache: str
    dir: Path
    remote: str | None = None

    def settings_env(self) -> dict[str, str]:
        """The ccache settings embedbuild gives every ccache it runs."""
        # compiler_check: see the module's docstring (wins over ccache.conf).
        env = {"CCACHE_DIR": str(self.dir), "CCACHE_COMPILERCHECK": "content"}
        if self.remote:
            env["CCACHE_REMOTE_STORAGE"] = self.remote
        return env

    def setting(self, key: str) -> str:
        """What ccache itself says ``key`` is set to, with our settings and its ccache.conf
        (e.g. ``remote_storage``)."""
        p = subprocess.run([self.ccache, "--get-config", key], capture_output=True, text=True,
                           env={**os.environ, **self.settings_env()})
        return p.stdout.strip()

    def prepare(self, work: Path, compilers: tuple[str, ...], base_dir: Path) -> dict[str, str]:
        """Make ``work`` hold the compiler links (work/bin) and the step's stats log;
        returns the environment the step's commands get."""
        bindir = work / "bin"
        bindir.mkdir(parents=True)
        for name in compilers:
            (bindir / name).symlink_to(self.ccache)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EmbedbuildError(f"the compiler cache folder cannot be made: {e.strerror}",
                                  where=str(self.dir),
                                  hint="set EMBEDBUILD_CCACHE_DIR to a folder you can write, "
                                  "or build with --no-ccache") from None
        return {
            **self.settings_env(),
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "CCACHE_BASEDIR": str(base_dir.resolve()),
            "CCACHE_STATSLOG": str(work / "stats.log"),
        }

    def report(self, run: Runner, work: Path) -> None:
        """Write what the step's compiles got from the cache into its log: one summary
        line of ours, then ccache's own account."""
        log = work / "stats.log"
        if not log.exists():
            return
        run.note(summary(read_stats_log(log)))
        run.run([self.ccache, "--show-log-stats", "-v"],
                env={**self.settings_env(), "CCACHE_STATSLOG": str(log)},
                what="ccache --show-log-stats")


def configured(enabled: bool = True,
               warn: Callable[[str], None] | None = None) -> CompilerCache | None:
    """The compiler cache this user asked for, or None when it is off: by ``enabled``
    (--no-ccache), by EMBEDBUILD_NO_CCACHE, or because ccache is not installed (then
    ``warn`` gets one line saying so, and the build goes on without it)."""
    if not enabled or os.environ.get("EMBEDBUILD_NO_CCACHE", "") not in ("", "0"):
        return None
    path = shutil.which("ccache")
    if path is None:
        if warn is not None:
            warn(MISSING)
        return None
    return CompilerCache(path, cache_dir("EMBEDBUILD_CCACHE_DIR", "ccache"),
                         os.environ.get("EMBEDBUILD_CCACHE_REMOTE") or None)


def as_compiled(path: Path, cwd: Path) -> str:
    """``path`` as the compiler sees it through ccache when it runs in ``cwd``: relative,
    between the real folders (ccache rewrites absolute paths under base_dir so). A step
    that maps an absolute folder away (``-ffile-prefix-map``) maps this form alike."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(cwd))


def read_stats_log(path: Path) -> Counter:
    """Counts of ccache's stats log (one ``# FILE`` line, then its counters, per call):
    calls, hits, remote_hits, misses, uncacheable."""
    calls: list[set[str]] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("# "):
            calls.append(set())
        elif calls:
            calls[-1].add(line.strip())
    counts: Counter = Counter()
    for ids in calls:
        counts["calls"] += 1
        if ids & {"direct_cache_hit", "preprocessed_cache_hit"}:
            counts["hits"] += 1
            counts["remote_hits"] += "remote_storage_hit" in ids
        elif "cache_miss" in ids:
            counts["misses"] += 1
        else:
            counts["uncacheable"] += 1
    return counts


def summary(counts: Counter) -> str:
    """One log line: ``ccache: H hits (R remote), M misses, U uncacheable``."""
    cacheable = counts["hits"] + counts["misses"]
    rate = f" ({100 * counts['hits'] / cacheable:.1f}% of cacheable)" if cacheable else ""
    return (f"ccache: {counts['hits']} hits{rate}, {counts['remote_hits']} of them remote, "
            f"{counts['misses']} misses, {counts['uncacheable']} uncacheable")
