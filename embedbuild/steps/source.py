"""Sources: fetch a pinned file into the download cache, verify it, unpack it.

Fetchers: a local file, a Debian source package (apt-get source with a
private apt setup derived from the machine's own), an https URL. A file whose
sha256 differs from the pin is never used. Once fetched, builds work offline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from embedbuild.command import Runner
from embedbuild.errors import SourceError
from embedbuild.model.source import Source
from embedbuild.step import Context, Step
from embedbuild.store import cache_dir, hash_file


def downloads_dir() -> Path:
    """$EMBEDBUILD_DOWNLOADS, else ~/.cache/embedbuild/downloads."""
    return cache_dir("EMBEDBUILD_DOWNLOADS", "downloads")


def _check(path: Path, src: Source, origin: str) -> None:
    if src.size is not None and (size := path.stat().st_size) != src.size:
        raise SourceError(f"size mismatch for {origin}: expected {src.size:,} bytes, got "
                          f"{size:,}", hint="the file was not used")
    got = hash_file(path)
    if got != src.sha256:
        raise SourceError(
            f"sha256 mismatch for {origin}: expected {src.sha256}, got {got}",
            hint="the file was not used. If the new file is the one you want "
            "(e.g. Debian updated the package), put its sha256 in the source's pin",
        )


def fetch(src: Source, run: Runner | None = None) -> Path:
    """The verified file for src in the download cache, fetching it if needed."""
    cache = downloads_dir() / src.sha256
    final = cache / src.basename
    if final.is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmpd:
        tmp = Path(tmpd) / src.basename
        if src.file is not None:
            if not src.file.is_file():
                raise SourceError(
                    f"source file not found: {src.file}",
                    hint="run tools/setup, which installs the Debian packages that provide it",
                )
            try:
                os.link(src.file, tmp)
            except OSError:
                shutil.copyfile(src.file, tmp)
            origin = str(src.file)
        elif src.url is not None:
            try:
                with urllib.request.urlopen(src.url, timeout=60) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f, 1 << 20)
            except OSError as e:
                raise SourceError(f"cannot download {src.url}: {e}") from None
            origin = src.url
        else:
            assert src.debian is not None and src.filename is not None
            _apt_source(src.debian, Path(tmpd), run)
            if not tmp.is_file():
                got = sorted(p.name for p in Path(tmpd).iterdir() if p.is_file())
                raise SourceError(
                    f"Debian source package {src.debian} has no file {src.filename}",
                    hint=f"it has: {', '.join(got)}",
                )
            origin = f"Debian source package {src.debian} ({src.filename})"
        _check(tmp, src, origin)
        os.rename(tmp, final)
    return final


def _apt_source(package: str, dest: Path, run: Runner | None) -> None:
    """apt-get source --download-only, with deb-src lists made from the machine's own
    deb entries in a private folder, so the system's apt setup is left alone."""
    state = downloads_dir() / ".apt"
    parts = state / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    stanzas = []
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for block in f.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in block.splitlines()
                if ":" in line and not line.startswith("#")
            )
            if fields.get("Types", "").split() and "deb" in fields["Types"].split():
                uris = fields.get("URIs", "").strip()
                if "debian" not in uris:
                    continue
                stanza = {k: v.strip() for k, v in fields.items()}
                stanza["Types"] = "deb-src"
                stanzas.append("\n".join(f"{k}: {v}" for k, v in stanza.items()))
    lst = Path("/etc/apt/sources.list")
    lines = []
    if lst.is_file():
        lines = [
            "deb-src" + line[3:]
            for line in lst.read_text().splitlines()
            if line.startswith("deb ") and "debian" in line
        ]
    if not stanzas and not lines:
        raise SourceError(
            "no Debian archive found in /etc/apt to fetch source packages from",
            hint="this fetcher needs a Debian apt configuration",
        )
    (parts / "src.sources").write_text("\n\n".join(stanzas) + "\n")
    (parts / "src.list").write_text("\n".join(lines) + "\n")
    opts = [
        "-o",
        "Dir::Etc::SourceList=/dev/null",
        "-o",
        f"Dir::Etc::SourceParts={parts}",
        "-o",
        f"Dir::State::Lists={state / 'lists'}",
        "-o",
        "Debug::NoLocking=1",
    ]
    for args in (["update", "-q"], ["source", "--download-only", "-q", package]):
        cmd = ["apt-get", *opts, *args]
        if run is not None:
            run.run(cmd, cwd=dest, what=f"apt-get {args[0]} ({package})")
        else:
            p = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
            if p.returncode:
                raise SourceError(f"apt-get {args[0]} failed: {p.stderr.strip()[-500:]}")


def unpack_step(name: str, src: Source) -> Step:
    """A step whose output is the unpacked source tree."""

    def build(ctx: Context) -> None:
        archive = fetch(src, ctx.run)
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

    return Step(
        kind="source",
        name=name,
        version=1,
        inputs={"sha256": src.sha256, "basename": src.basename, "strip": src.strip},
        build=build,
        outputs={"tree": "."},
    )


def archive_manifest(origin: dict) -> dict[str, dict]:
    """What tar unpacks from an origin's archive, in the store's files.json form."""
    src = Source.model_validate(origin["source"])
    out: dict[str, dict] = {}

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
