"""One path, one owner: who puts each path into the image (folders may be shared, with
one mode), and the check that overlays collide with nothing."""

from __future__ import annotations

from collections.abc import Iterable

from embedbuild.errors import BoardError
from embedbuild.model.system import System
from embedbuild.rootfs.generated import generated_entries
from embedbuild.rootfs.overlays import overlay_entries


class Owners:
    """Who put each path into the image: one path has one owner (folders may be shared,
    with one mode, since the kernel applies the last one it unpacks)."""

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[str, str, int]] = {}

    def claim(self, path: str, kind: str, mode: int, origin: str) -> str | None:
        """Record that ``origin`` puts ``path`` into the image; why it collides, if it does."""
        other = self._by_path.get(path)
        if other is not None:
            if not (kind == "dir" and other[1] == "dir"):
                return f"/{path} comes from both {other[0]} and {origin}"
            if other[2] != mode:
                return (f"folder /{path} is mode {other[2]:o} in {other[0]} but {mode:o} in "
                        f"{origin} (an overlay's NAME.toml can set it)")
        self._by_path[path] = (origin, kind, mode)
        return None


def check_overlays(system: System, board_name: str, dirs: Iterable[str] = ()) -> None:
    """Refuse an overlay file that another overlay or embedbuild's generated files also put
    into the image (packages are checked when their segments are joined)."""
    owners = Owners()
    for e in generated_entries(system, board_name, dirs):
        owners.claim(e.path, e.kind, e.mode, "the generated files (init and config)")
    for o in system.overlays:
        for e in overlay_entries(o):
            if why := owners.claim(e.path, e.kind, e.mode, f"overlay {o.name!r}"):
                raise BoardError(why, where=str(o.dir / e.path),
                                 hint="remove it from the overlay, or change the system instead")
