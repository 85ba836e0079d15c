"""`embedbuild sources`: prefetch what boards need, and move the lock to what Debian offers.

``fetch`` puts every locked file a board's build reads into the downloads cache, so
the builds after it work offline. ``update`` is this project's `cargo update`: for each
Debian-packaged input (and each toolchain package) it looks up the newest version the
archive offers, downloads and hashes it, and rewrites the lock in place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from embedbuild.debfile import extract_member
from embedbuild.debian_archive import DebianArchive, compare_versions
from embedbuild.errors import EmbedbuildError, SourceError
from embedbuild.load import UNLOCKED_VERSION, load_lock
from embedbuild.lockfile import Value, set_table, write_checked
from embedbuild.model.board import Board
from embedbuild.model.lock import HOST, Lock
from embedbuild.model.source import MAX_SIZE, Source
from embedbuild.steps.source import Substitute, debian_archive, downloaded, fetch
from embedbuild.store import hash_file
from embedbuild.toolchain import cross_packages, host_packages


def needed(board: Board) -> dict[str, Source]:
    """The locked files a board's build reads (by source name): those of the steps of its
    plan that unpack a source."""
    from embedbuild.plan import plan_board

    by_hash = {s.sha256: (name, s) for name, s in board.sources.items()}
    if board.kernel_owner is not None:
        by_hash.update({s.sha256: (name, s) for name, s in board.kernel_owner.sources.items()})
    out = {}
    for step in plan_board(board).result.walk():
        if step.kind == "source" and step.inputs["sha256"] in by_hash:
            name, src = by_hash[step.inputs["sha256"]]
            out[name] = src
    return out


def fetch_boards(boards: list[Board], say: Callable[[str], None],
                 substitute: Substitute | None = None) -> None:
    """Every locked file these boards need, in the downloads cache."""
    done: set[str] = set()
    for board in boards:
        for name, src in needed(board).items():
            if src.sha256 in done:
                continue
            done.add(src.sha256)
            if downloaded(src).is_file():
                say(f"{name}: {src.describe()} is here")
                continue
            path = fetch(src, substitute=substitute)
            say(f"{name}: fetched {src.describe()}, {path.stat().st_size:,} bytes")


@dataclass
class Change:
    """One table of the lock that moves: the table, what moves (old -> new, in words), and
    the values it gets (with ``replace``, the table's only values)."""

    table: tuple[str, ...]
    line: str
    values: dict[str, Value] = field(default_factory=dict)
    replace: bool = False


def _newest(archive: DebianArchive, package: str, kind: str) -> str | None:
    offers = archive.offers(package, kind)
    return offers[0].version if offers else None


def _fetch_new(archive: DebianArchive, src: Source, version: str) -> dict[str, Value]:
    """The new version's file of a Debian source, hashed and put in the downloads cache;
    the lock values that describe it."""
    downloads = downloaded(src).parent.parent
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as tmpd:
        tmp = Path(tmpd)
        if src.deb is not None:
            assert src.member is not None
            deb = archive.download(src.deb, version, tmp)
            name = src.member.rsplit("/", 1)[-1]
            with open(tmp / name, "wb") as out:
                extract_member(deb, src.member, out, MAX_SIZE)
            deb.unlink()
            values: dict[str, Value] = {}
        else:
            assert src.debian is not None and src.filename is not None
            files = archive.source(src.debian, version, tmp)
            name = src.filename
            if not (tmp / name).is_file():
                # A new upstream release renames the orig tarball: take the new one.
                origs = [p.name for p in files if ".orig.tar." in p.name
                         and ".orig.tar.asc" not in p.name and "orig-" not in p.name]
                if len(origs) != 1:
                    raise SourceError(f"{src.debian}={version} has no file {src.filename} and "
                                      f"no single .orig tarball instead (it has: "
                                      f"{', '.join(p.name for p in files)})",
                                      hint="set its filename in the lock by hand")
                name = origs[0]
            values = {"filename": name}
        path = tmp / name
        digest, size = hash_file(path), path.stat().st_size
        final = downloads / digest / name
        final.parent.mkdir(parents=True, exist_ok=True)
        if not final.is_file():
            os.rename(path, final)
    return {"version": version, **values, "sha256": digest, "size": size}


def source_changes(lock: Lock, names: list[str], archive: DebianArchive, fetch_new: bool,
                   say: Callable[[str], None]) -> list[Change]:
    """The sources of the lock (those named, or all) that Debian offers newer; with
    ``fetch_new``, each new file is downloaded and hashed for the lock. A package the
    archive does not offer at all is kept as it is, said in one line."""
    out = []
    for name, src in sorted(lock.sources.items()):
        if names and name not in names:
            continue
        package = src.deb or src.debian
        if package is None or src.version is None:
            continue  # a file or URL: locked by hand
        kind = "deb" if src.deb else "debian"
        new = _newest(archive, package, kind)
        if new is None:
            say(f"{name}: the archive offers no {package} at all: kept at {src.version}")
            continue
        if compare_versions(new, src.version) <= 0:
            continue
        values = _fetch_new(archive, src, new) if fetch_new else {}
        old = "(not locked)" if src.version == UNLOCKED_VERSION else src.version
        out.append(Change(("sources", name), f"{name}: {package} {old} -> {new}", values))
    return out


def toolchain_changes(lock: Lock, prefixes: set[str], names: list[str],
                      archive: DebianArchive) -> list[Change]:
    """The toolchain tables (one per toolchain prefix the boards use, and the host's)
    moved to the newest versions the archive offers of the packages installed for them."""
    tables: dict[str, dict[str, str]] = {HOST: host_packages()}
    for prefix in prefixes:
        tables[prefix.rstrip("-")] = cross_packages(prefix)
    out = []
    for triplet, installed in sorted(tables.items()):
        if names and triplet not in names:
            continue
        locked = lock.toolchains.get(triplet, {})
        want = {pkg: _newest(archive, pkg, "deb") or ver for pkg, ver in installed.items()}
        if want == locked:
            continue
        moved = [f"{p} {locked.get(p, 'none')} -> {v}" for p, v in sorted(want.items())
                 if locked.get(p) != v]
        gone = [f"{p} {v} -> none" for p, v in sorted(locked.items()) if p not in want]
        out.append(Change(("toolchains", triplet),
                          f"toolchains.{triplet}: {'; '.join(moved + gone)}", dict(want), True))
    return out


def apply(path: Path, changes: list[Change]) -> None:
    """Write the changes into the lock file at path (comments kept)."""
    text = path.read_text()
    for c in changes:
        text = set_table(text, c.table, c.values, replace=c.replace)
    write_checked(path, text)


def update(path: Path, prefixes: set[str], names: list[str], check: bool,
           say: Callable[[str], None], archive: DebianArchive | None = None) -> list[Change]:
    """Look up the newest versions (fresh package lists first); unless ``check``, fetch
    and hash them and rewrite the lock (entries added without a version and sha256 get
    them). ``prefixes``: the toolchains the boards using this lock build with. Returns
    the changes (each also said)."""
    unlocked: set[str] = set()
    lock = load_lock(path, unlocked)
    toolchains = {HOST, *lock.toolchains, *(p.rstrip("-") for p in prefixes)}
    unknown = [n for n in names if n not in lock.sources and n not in toolchains]
    if unknown:
        raise EmbedbuildError(f"the lock has no source or toolchain "
                              f"{', '.join(map(repr, unknown))}",
                              hint=f"its sources: {', '.join(sorted(lock.sources))}; "
                              f"toolchains: {', '.join(sorted(toolchains))}")
    archive = archive or debian_archive()
    archive.update()
    changes = source_changes(lock, names, archive, not check, say)
    changes += toolchain_changes(lock, prefixes, names, archive)
    for c in changes:
        say(c.line)
    if changes and not check:
        apply(path, changes)
    return changes
