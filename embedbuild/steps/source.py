"""Sources: fetch a locked file into the downloads cache, verify it, unpack it.

Where a file comes from, in order: the downloads cache (by sha256); a substituter
that holds it (a binary cache's ``sources/<sha256>``, when the build has
substituters); its origin: a local file, an https URL, a Debian source package or
binary package at its exact version (debian_archive.py, a private apt setup). A file
whose sha256 differs from the lock is never used. Once fetched, builds work offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from embedbuild.command import Runner
from embedbuild.debfile import extract_member
from embedbuild.debian_archive import DebianArchive
from embedbuild.errors import SourceError
from embedbuild.model.source import Source
from embedbuild.step import Context, Step
from embedbuild.store import cache_dir, hash_file

# An https download of a source must be complete within this many seconds.
URL_DEADLINE = 1800.0
# Fetches a missing download from elsewhere into the path given (the substituters, by
# its sha256); True when the file there is the locked one.
Substitute = Callable[[Source, Path], bool]


def downloads_dir() -> Path:
    """$EMBEDBUILD_DOWNLOADS, else ~/.cache/embedbuild/downloads."""
    return cache_dir("EMBEDBUILD_DOWNLOADS", "downloads")


def debian_archive(run: Runner | None = None) -> DebianArchive:
    """The private apt setup the Debian fetchers use (in the downloads folder)."""
    return DebianArchive(downloads_dir() / ".apt", run.note if run else None)


def downloaded(src: Source) -> Path:
    """Where the locked file of src is kept in the downloads cache (if fetched)."""
    return downloads_dir() / src.sha256 / src.basename


def _check(path: Path, src: Source) -> None:
    size = path.stat().st_size
    got = hash_file(path)
    if got != src.sha256 or (src.size is not None and size != src.size):
        raise SourceError(
            f"sha256 mismatch for {src.describe()}: the lock says {src.sha256}"
            f"{f' ({src.size:,} bytes)' if src.size else ''}, the file fetched is {got} "
            f"({size:,} bytes)",
            hint="the file was not used. The same version should never change: check where "
            "it came from. To lock what the archive serves now: `embedbuild sources update "
            "NAME`")


def fetch(src: Source, run: Runner | None = None, substitute: Substitute | None = None) -> Path:
    """The verified file for src in the downloads cache, fetching it if needed."""
    final = downloaded(src)
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=final.parent) as tmpd:
            tmp = Path(tmpd) / src.basename
            if substitute is None or not substitute(src, tmp):
                _from_origin(src, Path(tmpd), tmp, run)
            _check(tmp, src)
            os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            final.parent.rmdir()  # nothing of a failed fetch stays, not even its folder
        raise
    return final


def _from_origin(src: Source, tmpd: Path, tmp: Path, run: Runner | None) -> None:
    """Fetch src from where the lock says it comes from, to tmp."""
    if src.file is not None:
        if not src.file.is_file():
            raise SourceError(f"source file not found: {src.file}",
                              hint="give the path of an existing file")
        try:
            os.link(src.file, tmp)
        except OSError:
            shutil.copyfile(src.file, tmp)
    elif src.url is not None:
        _download(src.url, tmp, src.limit)
    elif src.deb is not None:
        assert src.version is not None and src.member is not None
        deb = debian_archive(run).download(src.deb, src.version, tmpd)
        with open(tmp, "wb") as out:
            extract_member(deb, src.member, out, src.limit)
        deb.unlink()
    else:
        assert src.debian is not None and src.version is not None
        got = debian_archive(run).source(src.debian, src.version, tmpd)
        if not tmp.is_file():
            raise SourceError(
                f"Debian source package {src.debian}={src.version} has no file {src.filename}",
                hint=f"it has: {', '.join(p.name for p in got)}")


def _download(url: str, dest: Path, limit: int) -> None:
    """An https download, bounded in bytes and in total time."""
    deadline = time.monotonic() + URL_DEADLINE
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
            done = 0
            while chunk := r.read(1 << 20):
                done += len(chunk)
                if done > limit:
                    raise SourceError(f"{url} sent more than the {limit:,} bytes expected")
                if time.monotonic() > deadline:
                    raise SourceError(f"{url} took longer than {URL_DEADLINE:.0f} s")
                f.write(chunk)
    except OSError as e:
        raise SourceError(f"cannot download {url}: {e}") from None


# What tar unpacks; any other locked file (a regulatory database) is kept as it is.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


def is_archive(src: Source) -> bool:
    """Whether the locked file is a tarball to unpack (by its name)."""
    return src.basename.endswith(ARCHIVE_SUFFIXES)


def unpack_step(name: str, src: Source) -> Step:
    """A step whose output is the unpacked source tree: the archive's files, or for a
    locked file that is no archive, that file under its name."""

    def build(ctx: Context) -> None:
        archive = fetch(src, ctx.run, ctx.substitute_download)
        if not is_archive(src):
            shutil.copyfile(archive, ctx.output("tree") / src.basename)
            ctx.origin = {"source": src.model_dump(mode="json")}
            return
        ctx.run.run(
            [
                "tar",
                "-xf",
                archive,
                "-C",
                ctx.output("tree"),
                f"--strip-components={src.strip}",
                "--no-same-owner",
            ],
            what=f"unpacking {archive.name}",
        )
        # The pinned archive says what each file holds: `verify` derives the expected
        # files from it, so the build does not read 1.5 GB back to hash it.
        ctx.origin = {"source": src.model_dump(mode="json")}

    # A plain file is not unpacked: strip does not apply to it.
    inputs = ({"sha256": src.sha256, "basename": src.basename, "strip": src.strip}
              if is_archive(src) else {"sha256": src.sha256, "basename": src.basename,
                                       "as_file": True})
    return Step(
        kind="source",
        name=name,
        version=1,
        inputs=inputs,
        build=build,
        outputs={"tree": "."},
    )


def archive_manifest(origin: dict) -> dict[str, dict]:
    """What tar unpacks from an origin's archive, in the store's files.json form."""
    src = Source.model_validate(origin["source"])
    out: dict[str, dict] = {}
    if not is_archive(src):
        path = fetch(src)
        return {src.basename: {"sha256": hash_file(path), "size": path.stat().st_size,
                               "exec": False}}

    def unpacked(name: str) -> str | None:
        # tar --strip-components: members with nothing left are not unpacked.
        parts = [p for p in name.split("/") if p not in ("", ".")]
        return "/".join(parts[src.strip:]) or None

    with tarfile.open(fetch(src), mode="r|*") as tf:
        for m in tf:
            path = unpacked(m.name)
            if path is None:
                continue
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                digest = hashlib.file_digest(f, "sha256").hexdigest()
                out[path] = {"sha256": digest, "size": m.size, "exec": bool(m.mode & 0o111)}
            elif m.islnk() and (target := unpacked(m.linkname)) in out:
                out[path] = out[target]
            elif m.issym():
                out[path] = {"link": m.linkname}
            elif m.isdir():
                out[path] = {"type": "dir"}
            else:
                out.pop(path, None)  # a later member of another kind replacing a file
    return out
