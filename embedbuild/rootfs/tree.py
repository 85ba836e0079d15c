"""A folder as cpio entries: what a package's tree or an overlay puts into the image."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from embedbuild.cpio import Entry


def tree_entries(root: Path) -> list[Entry]:
    """A folder as cpio entries (owned by root, modes as on disk, no times)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(rel, "symlink", 0o777, target=os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(rel, "dir", st.st_mode & 0o7777))
            elif stat.S_ISREG(st.st_mode):
                out.append(Entry(rel, "file", st.st_mode & 0o7777, data=full.read_bytes()))
    return out
