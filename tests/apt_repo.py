"""A Debian repository made by a test: binary packages built with dpkg-deb, source
packages (.dsc, .orig and .debian tarballs), Packages and Sources indexes, as a flat
repository apt reads from a folder (``file:``) or from a loopback HTTP server.

Versions can be added and removed, the way the archive moves on and drops old
revisions; ``sources_file`` is what EMBEDBUILD_APT_SOURCES points embedbuild's private
apt setup at.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def tarball(files: dict[str, bytes], compression: str = "gz") -> bytes:
    """A reproducible tarball of files (name -> content) under one top folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class AptRepo:
    """A flat repository in ``root``."""

    root: Path
    debs: dict[tuple[str, str], Path] = field(default_factory=dict)
    sources: dict[tuple[str, str], list[Path]] = field(default_factory=dict)

    def add_deb(self, name: str, version: str, files: dict[str, bytes]) -> Path:
        """Build package name=version installing files (path -> content) with dpkg-deb."""
        tree = self.root / f".build-{name}-{version}"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
            f"Maintainer: embedbuild tests <tests@embedbuild.invalid>\nDescription: test\n")
        for path, data in files.items():
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).write_bytes(data)
        deb = self.root / f"{name}_{version.split(':')[-1]}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", tree, deb],
                       check=True, capture_output=True)
        subprocess.run(["rm", "-rf", tree], check=True)
        self.debs[(name, version)] = deb
        self.index()
        return deb

    def add_source(self, name: str, version: str, orig: bytes) -> Path:
        """Source package name=version whose .orig tarball is ``orig``; returns that file."""
        upstream = version.split(":")[-1].rsplit("-", 1)[0]
        plain = version.split(":")[-1]
        orig_file = self.root / f"{name}_{upstream}.orig.tar.gz"
        orig_file.write_bytes(orig)
        debian = self.root / f"{name}_{plain}.debian.tar.xz"
        debian.write_bytes(tarball({"debian/changelog": version.encode()}, "xz"))
        dsc = self.root / f"{name}_{plain}.dsc"
        dsc.write_text(f"Format: 3.0 (quilt)\nSource: {name}\nVersion: {version}\n")
        self.sources[(name, version)] = [dsc, orig_file, debian]
        self.index()
        return orig_file

    def remove(self, name: str, version: str) -> None:
        """The archive drops a version (its index entry; shared files stay)."""
        self.debs.pop((name, version), None)
        self.sources.pop((name, version), None)
        self.index()

    def index(self) -> None:
        """Write the Packages and Sources indexes."""
        stanzas = []
        for (name, version), deb in sorted(self.debs.items()):
            data = deb.read_bytes()
            stanzas.append(f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
                           f"Maintainer: t <t@t>\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                           f"SHA256: {sha256(data)}\nDescription: test\n")
        (self.root / "Packages").write_text("\n".join(stanzas))
        stanzas = []
        for (name, version), files in sorted(self.sources.items()):
            md5 = "".join(f" {hashlib.md5(f.read_bytes()).hexdigest()} {f.stat().st_size} "
                          f"{f.name}\n" for f in files)
            sha = "".join(f" {sha256(f.read_bytes())} {f.stat().st_size} {f.name}\n"
                          for f in files)
            stanzas.append(f"Package: {name}\nBinary: {name}\nVersion: {version}\n"
                           f"Maintainer: t <t@t>\nArchitecture: all\nFormat: 3.0 (quilt)\n"
                           f"Directory: .\nFiles:\n{md5}Checksums-Sha256:\n{sha}")
        (self.root / "Sources").write_text("\n".join(stanzas))

    def sources_file(self, dest: Path, uri: str | None = None) -> Path:
        """A one-line sources file naming this repository (or ``uri`` serving it)."""
        uri = uri or f"file:{self.root}"
        dest.write_text(f"deb [trusted=yes] {uri} ./\ndeb-src [trusted=yes] {uri} ./\n")
        return dest


@contextmanager
def served(root: Path) -> Iterator[str]:
    """root served over HTTP on 127.0.0.1 (a free port); yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
