"""The Debian archive, through a private apt setup: exact versions of binary and source
packages, fetched without touching the machine's own apt state.

Everything apt keeps (lists, cache, configuration, an empty dpkg status) lives in one
folder of embedbuild's (``downloads/.apt``). Its sources are the machine's own ``deb``
entries (``/etc/apt/sources.list`` and ``sources.list.d``), each also as ``deb-src``,
without backports suites (they carry new upstream releases, not updates of what is
locked), or the file ``$EMBEDBUILD_APT_SOURCES`` names instead (a mirror, or a test's
own repository). An ``APT_CONFIG`` file makes apt read none of the machine's
configuration, so no system hook runs on ``update``.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from embedbuild.errors import SourceError

# Why apt said no to an exact version (apt-get download / apt-get source, exit 100).
_NOT_FOUND = re.compile(r"^E: (Version '.*' for '.*' was not found|Can not find version .*|"
                        r"Unable to locate package .*|Unable to find a source package for .*)$",
                        re.M)
# An apt command that hangs (a mirror that stops answering) is given up on.
APT_TIMEOUT = 900.0


class VersionGone(SourceError):
    """The archive does not offer the exact version asked for."""


@dataclass(frozen=True)
class Offer:
    """A version of a package the archive offers, and where (suite and component)."""

    version: str
    where: str


def _entries_from_machine() -> list[str]:
    """The machine's deb entries as deb822 stanzas of Types "deb deb-src", backports left out."""
    stanzas = []
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for block in f.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            key = None
            for line in block.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key:  # a folded continuation line
                    fields[key] += "\n" + line
                elif ":" in line:
                    key, value = line.split(":", 1)
                    fields[key] = value.strip()
            if "deb" not in fields.get("Types", "").split():
                continue
            suites = [s for s in fields.get("Suites", "").split() if not s.endswith("-backports")]
            if not suites or fields.get("Enabled", "yes").lower() == "no":
                continue
            fields.update(Types="deb deb-src", Suites=" ".join(suites))
            stanzas.append("\n".join(f"{k}: {v}" for k, v in fields.items()))
    lines = []
    one_line = sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for f in [Path("/etc/apt/sources.list"), *one_line]:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            words = line.split()
            if not words or words[0] != "deb":
                continue
            # deb [options] URI SUITE COMPONENTS...: the suite follows the URI.
            rest = line[3:].strip()
            opts = ""
            if rest.startswith("["):
                opts, rest = rest[: rest.index("]") + 1], rest[rest.index("]") + 1:].strip()
            parts = rest.split()
            if len(parts) < 2 or parts[1].endswith("-backports"):
                continue
            lines += [f"deb {opts} {rest}".replace("  ", " "),
                      f"deb-src {opts} {rest}".replace("  ", " ")]
    return ["\n\n".join(stanzas) + "\n", "\n".join(lines) + "\n"]


def _compare_part(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or a revision."""

    def order(c: str) -> int:
        if c == "~":
            return -1
        if c.isdigit():
            return 0
        if c.isalpha():
            return ord(c)
        return ord(c) + 256

    while a or b:
        na = re.match(r"[^0-9]*", a).group(0)  # type: ignore[union-attr]
        nb = re.match(r"[^0-9]*", b).group(0)  # type: ignore[union-attr]
        for i in range(max(len(na), len(nb))):
            ca = order(na[i]) if i < len(na) else 0
            cb = order(nb[i]) if i < len(nb) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        a, b = a[len(na):], b[len(nb):]
        da = re.match(r"[0-9]*", a).group(0)  # type: ignore[union-attr]
        db = re.match(r"[0-9]*", b).group(0)  # type: ignore[union-attr]
        ia, ib = int(da or 0), int(db or 0)
        if ia != ib:
            return -1 if ia < ib else 1
        a, b = a[len(da):], b[len(db):]
    return 0


def compare_versions(a: str, b: str) -> int:
    """Debian version order (as `dpkg --compare-versions`): -1, 0 or 1."""

    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def newest(versions: list[str]) -> str:
    """The newest of Debian versions."""
    return max(versions, key=functools.cmp_to_key(compare_versions))


class DebianArchive:
    """A private apt setup under ``root``; every apt call holds its lock.

    Args:
        root: the folder apt keeps its lists, cache and configuration in.
        log: receives each apt command's output (a step's log), if given.
    """

    def __init__(self, root: Path, log: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.log = log
        self._updated = False

    # -- setup ------------------------------------------------------------------

    def _configure(self) -> list[str]:
        """Write the private configuration; the apt options that use it."""
        parts = self.root / "sources"
        empty = self.root / "empty"
        for d in (parts, empty, self.root / "lists" / "partial",
                  self.root / "cache" / "archives" / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        (self.root / "apt.conf").write_text(
            f'Dir::Etc::Main "/dev/null";\nDir::Etc::Parts "{empty}";\n'
            f'Dir::Etc::Preferences "/dev/null";\nDir::Etc::PreferencesParts "{empty}";\n')
        own = os.environ.get("EMBEDBUILD_APT_SOURCES")
        if own:
            text = Path(own).read_text()
            deb822 = bool(re.search(r"^Types:", text, re.M))
            texts = [text, ""] if deb822 else ["", text]
        else:
            texts = _entries_from_machine()
            if not texts[0].strip() and not texts[1].strip():
                raise SourceError(
                    "no Debian archive found in /etc/apt to fetch packages from",
                    hint="set EMBEDBUILD_APT_SOURCES to a sources file naming a Debian mirror")
        # Replaced whole each time: what a previous run wrote must not linger.
        for name, text in zip(("archive.sources", "archive.list"), texts, strict=True):
            (parts / name).write_text(text)
        return ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={parts}",
                "-o", f"Dir::State::Lists={self.root / 'lists'}",
                "-o", f"Dir::Cache={self.root / 'cache'}",
                "-o", f"Dir::State::Status={self.root / 'status'}",
                "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root",
                "-o", "Acquire::Retries=2"]

    @contextmanager
    def _locked(self) -> Iterator[list[str]]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._configure()
        finally:
            os.close(fd)

    def _apt(self, opts: list[str], args: list[str], cwd: Path | None = None,
             tool: str = "apt-get") -> subprocess.CompletedProcess[str]:
        cmd = [tool, *opts, *args]
        env = {**os.environ, "APT_CONFIG": str(self.root / "apt.conf"), "LC_ALL": "C"}
        try:
            p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                               timeout=APT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SourceError(f"{tool} {args[0]} gave no answer in {APT_TIMEOUT:.0f} s",
                              hint="check the network and the mirror") from None
        except FileNotFoundError:
            raise SourceError(f"{tool} not found", hint="embedbuild needs Debian's apt") from None
        if self.log:
            self.log(f"$ {tool} {' '.join(args)}\n{p.stdout}{p.stderr}")
        return p

    def _update(self, opts: list[str]) -> None:
        t0 = time.monotonic()
        p = self._apt(opts, ["update", "-q"])
        if p.returncode != 0 or re.search(r"^(E|W): Failed to fetch", p.stderr, re.M):
            raise SourceError(f"apt-get update failed: {_tail(p.stderr)}",
                              hint="check the network and the sources apt was given "
                              "(EMBEDBUILD_APT_SOURCES, or the machine's /etc/apt)")
        if self.log:
            self.log(f"(package lists updated in {time.monotonic() - t0:.1f} s)")
        self._updated = True

    def update(self) -> None:
        """Fetch the archive's current package lists."""
        with self._locked() as opts:
            self._update(opts)

    def _has_lists(self) -> bool:
        lists = self.root / "lists"
        return lists.is_dir() and any(p.name.endswith(("_Packages", "_Sources", ".lz4", ".xz"))
                                      for p in lists.iterdir())

    # -- queries ----------------------------------------------------------------

    def offers(self, package: str, kind: str) -> list[Offer]:
        """The versions of a binary (``kind`` "deb") or source ("debian") package the
        archive offers, newest first (lists are fetched first if there are none)."""
        with self._locked() as opts:
            if not self._has_lists():
                self._update(opts)
            p = self._apt(opts, ["madison", package], tool="apt-cache")
        want = "Sources" if kind == "debian" else "Packages"
        found: dict[str, Offer] = {}
        for line in p.stdout.splitlines():
            cols = [c.strip() for c in line.split("|")]
            if len(cols) == 3 and cols[0] == package and cols[2].endswith(want):
                found.setdefault(cols[1], Offer(cols[1], cols[2].rsplit(" ", 1)[0]))
        order = functools.cmp_to_key(compare_versions)
        return sorted(found.values(), key=lambda o: order(o.version), reverse=True)

    # -- fetching ---------------------------------------------------------------

    def _fetch(self, args: list[str], dest: Path, package: str, version: str, kind: str) -> None:
        """Run apt-get ARGS in dest; if that fails, update the lists once and try again;
        a version still unknown: VersionGone naming what is offered."""
        with self._locked() as opts:
            if not self._has_lists():
                self._update(opts)
            p = self._apt(opts, args, cwd=dest)
            # Lists from an earlier run may name a version or file the archive has since
            # dropped or moved: fetch them afresh once.
            if p.returncode != 0 and not self._updated:
                self._update(opts)
                p = self._apt(opts, args, cwd=dest)
        if p.returncode == 0:
            return
        if _NOT_FOUND.search(p.stderr):
            offered = [o.version for o in self.offers(package, kind)]
            what = "source package" if kind == "debian" else "package"
            raise VersionGone(
                f"the Debian archive does not offer {what} {package}={version} (any more) "
                f"(it offers: {', '.join(offered) or 'no version at all'})",
                hint="a binary cache that holds the file (see Sharing builds in README.md) "
                "still serves it by its sha256; or move the lock to what is offered: "
                "`embedbuild sources update NAME`")
        raise SourceError(f"apt-get {args[0]} {package}={version} failed: {_tail(p.stderr)}")

    def download(self, package: str, version: str, dest: Path) -> Path:
        """The .deb of package=version, downloaded into dest."""
        self._fetch(["download", "-q", f"{package}={version}"], dest, package, version, "deb")
        debs = [p for p in dest.glob(f"{package}_*.deb")]
        if len(debs) != 1:
            raise SourceError(f"apt-get download {package}={version} left no single .deb "
                              f"(found: {', '.join(p.name for p in debs) or 'none'})")
        return debs[0]

    def source(self, package: str, version: str, dest: Path) -> list[Path]:
        """The files of source package=version (.dsc, .orig and Debian tarballs) in dest."""
        self._fetch(["source", "--download-only", "-q", f"{package}={version}"], dest, package,
                    version, "debian")
        return sorted(p for p in dest.iterdir() if p.is_file())


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[-3:])[-500:] or "(no message)"
