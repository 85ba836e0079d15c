"""Board folders -> validated, resolved Board models.

Everything after this module sees only the model, never the TOML: every
reference a board makes (sources, overlays with their attributes, packages, the
U-Boot build) is resolved here, so anything a build would refuse for a reason
visible in the board's files is refused at load, by `show` as by `build`.
Errors name the file, the line where it can be found, and the key.
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
from embedbuild.model.system import Overlay, OverlayAttrs, System

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
        text = path.read_bytes().decode()
    except OSError as e:
        raise BoardError(f"cannot read: {e.strerror}", where=str(path)) from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise BoardError(f"not UTF-8 text (byte {e.start})", where=f"{path}:{line}",
                         hint="TOML files are UTF-8: fix or remove that byte") from None
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
        elif err["type"] in ("literal_error", "enum"):
            msg = f"{err['input']!r} is not known: {msg[0].lower()}{msg[1:]}"
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


def _where(path: Path, text: str, *key: str) -> str:
    line = key_line(text, key)
    return f"{path}:{line}" if line else str(path)


def load_board(name_or_path: str, system: Path | None = None) -> Board:
    """Load, validate and resolve a board folder by name or path; ``system`` replaces
    its [system]."""
    bdir = find_board(name_or_path)
    path = bdir / "board.toml"
    data, text = read_toml(path)
    for injected in ("name", "dir"):
        if injected in data:
            raise BoardError(f"{injected}: unknown key (the board's {injected} is its folder)",
                             where=_where(path, text, injected))
    sources: dict[str, Source] = {}
    common = bdir.parent / COMMON / "sources.toml"
    if common.is_file():
        sources.update(load_sources(common))
    own = data.get("sources", {})
    if not isinstance(own, dict):
        raise BoardError("sources must be a table of named sources ([sources.NAME])",
                         where=_where(path, text, "sources"))
    for sname, spec in own.items():
        sources[sname] = _validate(Source, spec, path, text, {}, ("sources", sname))
    data = {**data, "sources": sources, "name": bdir.name, "dir": bdir}
    sys_where = str(system) if system is not None else str(path)
    context = {"dir": bdir, "find_overlay": lambda name: find_overlay(name, sys_where)}
    if system is not None:
        data.pop("system", None)
    board: Board = _validate(Board, data, path, text, context)
    if system is not None:
        board = board.model_copy(update={"system": load_system(system)})
    check_references(board, path, text, common)
    return board


def check_references(board: Board, path: Path, text: str, common: Path) -> None:
    """Every name the board uses must resolve: sources, the userland its system needs,
    overlays that do not collide with each other or with the generated files."""
    from embedbuild.rootfs import check_overlays

    known = ", ".join(sorted(board.sources)) or "none"
    hint = f"define it under [sources] or in {common}; known: {known}"
    if board.kernel.source not in board.sources:
        raise BoardError(f"kernel.source {board.kernel.source!r} is not a known source",
                         where=_where(path, text, "kernel", "source"), hint=hint)
    if board.uboot.build and board.uboot.build.source not in board.sources:
        raise BoardError(
            f"uboot.build.source {board.uboot.build.source!r} is not a known source",
            where=_where(path, text, "uboot", "build", "source"), hint=hint)
    if board.kernel.fit and (board.system is None or board.system.initramfs != "separate"):
        raise BoardError("kernel.fit packs the kernel with a separate initramfs: the system "
                         'needs initramfs = "separate"', where=_where(path, text, "kernel", "fit"))
    if board.system is None:
        return
    if board.userland is None:
        raise BoardError(f"board {board.name} has a system but no [userland] section",
                         where=str(path), hint="add [userland] busybox = [fragments]")
    for pkg in ("busybox", *board.system.packages):
        if pkg not in board.sources:
            raise BoardError(f"no source named {pkg!r} for package {pkg}",
                             where=_where(path, text, "system", "packages"), hint=hint)
    check_overlays(board.system, board.name)


def load_system(path: Path) -> System:
    """A system file (the same keys as a board's [system] table), overlays resolved."""
    data, text = read_toml(path)
    return _validate(System, data, path, text,
                     {"find_overlay": lambda name: find_overlay(name, str(path))})


def overlays_dirs() -> list[Path]:
    """Folders searched for overlays: $EMBEDBUILD_OVERLAYS (colon-separated), then the project's."""
    extra = [Path(p) for p in os.environ.get("EMBEDBUILD_OVERLAYS", "").split(":") if p]
    return [*extra, PROJECT_OVERLAYS]


def find_overlay(name: str, where: str) -> Overlay:
    """An overlay's folder and attributes (overlays/NAME.toml, if any), resolved."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"{name!r} is not an overlay name (lowercase letters, digits, - and _)")
    for root in overlays_dirs():
        folder = root / name
        if folder.is_dir():
            attrs = root / f"{name}.toml"
            if not attrs.is_file():
                return Overlay(name=name, dir=folder.resolve())
            data, text = read_toml(attrs)
            return Overlay(name=name, dir=folder.resolve(), attrs_file=attrs.resolve(),
                           attrs=_validate(OverlayAttrs, data, attrs, text, {}))
    searched = ", ".join(str(r) for r in overlays_dirs())
    raise ValueError(f"overlay {name!r} not found: create the folder {name}/ in one of: "
                     f"{searched}")
