"""Overlays: a folder copied into the image, with the owners, modes and device nodes
its attribute file (overlays/NAME.toml) gives."""

from __future__ import annotations

from embedbuild.cpio import Entry
from embedbuild.errors import BoardError
from embedbuild.model.system import Overlay
from embedbuild.rootfs.tree import tree_entries


def overlay_entries(overlay: Overlay) -> list[Entry]:
    """An overlay folder, with owners, modes and device nodes from its attributes.

    The attribute file (overlays/NAME.toml) lets a user without root on the
    build host say ``[[entry]] path, mode, uid, gid`` and ``[[node]] path, type
    (char/block/fifo), major, minor, mode``.
    """
    entries = {e.path: e for e in tree_entries(overlay.dir)}
    where = str(overlay.attrs_file)
    for a in overlay.attrs.entry:
        old = entries.get(a.path)
        if old is None:
            raise BoardError(f"entry {a.path!r} is not in overlay {overlay.dir}", where=where,
                             hint="fix the path (relative to the overlay folder) or add the file")
        entries[a.path] = Entry(old.path, old.kind, a.mode if a.mode is not None else old.mode,
                                old.data, old.target, uid=a.uid, gid=a.gid)
    for n in overlay.attrs.node:
        if n.path in entries:
            raise BoardError(f"node {n.path!r} is also a file in the overlay", where=where,
                             hint="remove one of the two")
        entries[n.path] = Entry(n.path, n.type, n.mode, major=n.major, minor=n.minor,
                                uid=n.uid, gid=n.gid)
    return list(entries.values())
