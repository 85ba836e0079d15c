"""Board folders -> validated Board models.

Everything after this module sees only the model, never the TOML. Errors name
the file, the line where it can be found, and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from embedbuild.errors import BoardError
from embedbuild.model.board import Board
from embedbuild.model.source import Source
from embedbuild.model.system import OverlayAttrs, System

PROJECT_BOARDS = Path(__file__).resolve().parent.parent / "boards"
PROJECT_OVERLAYS = Path(__file__).resolve().parent.parent / "overlays"
COMMON = "common"


def boards_dirs() -> list[Path]:
    """Folders searched for boards: $EMBEDBUILD_BOARDS (colon-separated), then the project's."""
    extra = [Path(p) for p in os.environ.get("EMBEDBUILD_BOARDS", "").split(":") if p]
    return [*extra, PROJECT_BOARDS]


def known_boards() -> dict[str, Path]:
    """Board name -> folder, first match in the search path wins."""
    found: dict[str, Path] = {}
    for root in boards_dirs():
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir()):
            if (d / "board.toml").is_file() and d.name not in found:
                found[d.name] = d
    return found


def find_board(name_or_path: str) -> Path:
    """Resolve a board name (or a path to a board folder) to its folder."""
    p = Path(name_or_path)
    if (p / "board.toml").is_file():
        return p.resolve()
    boards = known_boards()
    if name_or_path in boards:
        return boards[name_or_path]
    known = ", ".join(boards) or "none"
    raise BoardError(
        f"unknown board {name_or_path!r}",
        hint=f"known boards: {known} (`embedbuild boards` lists them)",
    )


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; syntax errors become BoardError at file:line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BoardError(f"cannot read: {e.strerror}", where=str(path)) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f"{path}:{m.group(1)}" if m else str(path)
        what = re.sub(r"\s*\(at line.*\)$", "", msg) if m else msg
        raise BoardError(
            f"malformed TOML: {what}", where=where, hint="fix the syntax at that line"
        ) from None


def key_line(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of a key path like ('kernel', 'image') in TOML text.

    Returns the line of the key itself, else of the closest enclosing table.
    """
    keys = [k for k in loc if isinstance(k, str)]
    table: list[str] = []
    best = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", line):
            table = [p.strip().strip('"') for p in m.group(1).split(".")]
            if keys[: len(table)] == table:
                best = n
            continue
        if m := re.match(r'^"?([A-Za-z0-9_.-]+)"?\s*=', line):
            full = table + [p.strip().strip('"') for p in m.group(1).split(".")]
            if full == keys[: len(full)]:
                if len(full) == len(keys):
                    return n
                best = n
    return best


def _format_errors(e: ValidationError, path: Path, text: str, prefix: tuple = ()) -> BoardError:
    lines = []
    first_where = None
    for err in e.errors():
        loc = prefix + tuple(err["loc"])
        key = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")
        line = key_line(text, loc)
        where = f"{path}:{line}" if line else str(path)
        first_where = first_where or where
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo? see the board schema in README.md)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{where}: {key or '(top)'}: {msg}")
    if len(lines) == 1:
        return BoardError(lines[0].split(": ", 1)[1], where=first_where)
    return BoardError(f"{len(lines)} problems:\n  " + "\n  ".join(lines), where=str(path))


def _validate(
    model: type[BaseModel], data: Any, path: Path, text: str, context: dict, prefix: tuple = ()
) -> Any:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise _format_errors(e, path, text, prefix) from None


def load_sources(path: Path) -> dict[str, Source]:
    """Read a sources.toml: a table of named, pinned sources."""
    data, text = read_toml(path)
    return {name: _validate(Source, spec, path, text, {}, (name,)) for name, spec in data.items()}


def load_board(name_or_path: str, system: Path | None = None) -> Board:
    """Load and validate a board folder by name or path; ``system`` replaces its [system]."""
    bdir = find_board(name_or_path)
    path = bdir / "board.toml"
    data, text = read_toml(path)
    sources: dict[str, Source] = {}
    common = bdir.parent / COMMON / "sources.toml"
    if common.is_file():
        sources.update(load_sources(common))
    own = data.get("sources", {})
    if isinstance(own, dict):
        for sname, spec in own.items():
            sources[sname] = _validate(Source, spec, path, text, {}, ("sources", sname))
    data = {**data, "sources": sources, "name": bdir.name, "dir": bdir}
    board: Board = _validate(Board, data, path, text, {"dir": bdir})
    if board.kernel.source not in board.sources:
        line = key_line(text, ("kernel", "source"))
        raise BoardError(
            f"kernel.source {board.kernel.source!r} is not a known source",
            where=f"{path}:{line}" if line else str(path),
            hint=f"define it under [sources] or in {common}; known: "
            + (", ".join(sorted(board.sources)) or "none"),
        )
    if system is not None:
        board = board.model_copy(update={"system": load_system(system)})
    if board.system is not None:
        for name in board.system.overlays:
            find_overlay(name, str(system or path))  # a missing overlay fails at load
    return board


def load_system(path: Path) -> System:
    """A system file (the same keys as a board's [system] table)."""
    data, text = read_toml(path)
    return _validate(System, data, path, text, {})


def overlay_attrs(path: Path) -> OverlayAttrs:
    """An overlay's attribute file."""
    data, text = read_toml(path)
    return _validate(OverlayAttrs, data, path, text, {})


def overlays_dirs() -> list[Path]:
    """Folders searched for overlays: $EMBEDBUILD_OVERLAYS (colon-separated), then the project's."""
    extra = [Path(p) for p in os.environ.get("EMBEDBUILD_OVERLAYS", "").split(":") if p]
    return [*extra, PROJECT_OVERLAYS]


def find_overlay(name: str, where: str) -> tuple[Path, Path | None]:
    """An overlay's folder and its attribute file (overlays/NAME.toml), if any."""
    for root in overlays_dirs():
        folder = root / name
        if folder.is_dir():
            attrs = root / f"{name}.toml"
            return folder, attrs if attrs.is_file() else None
    searched = ", ".join(str(r) for r in overlays_dirs())
    raise BoardError(f"overlay {name!r} not found", where=where,
                     hint=f"create the folder {name}/ in one of: {searched}")
