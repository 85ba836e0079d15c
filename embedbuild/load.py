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

from embedbuild.bounded import FetchError, read_file
from embedbuild.elf import TOOLCHAIN_ELF
from embedbuild.errors import BoardError
from embedbuild.model.access_point import CHANNELS, check_passphrase
from embedbuild.model.board import Board
from embedbuild.model.config import UserConfig
from embedbuild.model.lock import HOST, Lock
from embedbuild.model.source import Source
from embedbuild.model.system import Overlay, OverlayAttrs, System, service_order
from embedbuild.packages import load_context, registry, userland
from embedbuild.rootfs import access_point as ap_files

PROJECT_BOARDS = Path(__file__).resolve().parent.parent / "boards"
PROJECT_OVERLAYS = Path(__file__).resolve().parent.parent / "overlays"
COMMON = "common"
# The lock, in the common folder beside the boards: every input's exact version and hash.
LOCK = "lock.toml"
# The most a board, system, overlay or config file and a Kconfig fragment may hold
# (a full defconfig is about 200 KB).
MAX_TEXT = 16 << 20


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
    # A folder that is not a board (empty, or board.toml is not a file): say so, not
    # "unknown board", whether it was given as a path or found in the search path.
    for folder in [p] + [root / name_or_path for root in boards_dirs() if p.name == name_or_path]:
        if folder.is_dir():
            toml = folder.resolve() / "board.toml"
            if toml.exists():
                raise BoardError("board.toml is not a file", where=str(toml),
                                 hint="a board folder holds a board.toml file (see README.md)")
            raise BoardError("not a board folder: it has no board.toml",
                             where=str(folder.resolve()),
                             hint="a board folder holds a board.toml (see boards/qemu-arm-virt)")
    known = ", ".join(boards) or "none"
    raise BoardError(
        f"unknown board {name_or_path!r}",
        hint=f"known boards: {known} (`embedbuild boards` lists them)",
    )


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; syntax errors become BoardError at file:line."""
    text = read_text(path, "TOML files are UTF-8")
    try:
        return tomllib.loads(text), text
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise BoardError("malformed TOML: arrays or tables nested too deeply", where=str(path),
                         hint="nest less (a board or system needs a few levels)") from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f"{path}:{m.group(1)}" if m else str(path)
        what = re.sub(r"\s*\(at line.*\)$", "", msg) if m else msg
        raise BoardError(
            f"malformed TOML: {what}", where=where, hint="fix the syntax at that line"
        ) from None


_KEY_PART = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*""")


def dotted_key(line: str, pos: int = 0) -> tuple[list[str], int] | None:
    """A TOML dotted key at ``pos`` (bare or quoted parts: a."b.c") and where it ends."""
    parts = []
    while m := _KEY_PART.match(line, pos):
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        if not line.startswith(".", pos):
            return parts, pos
        pos += 1
    return None


def key_line(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of a key path like ('kernel', 'image') in TOML text, where
    an int is the index into an array of tables (('system', 'services', 2, 'name')).

    Returns the line of the key itself, else of the closest enclosing table or key.
    """
    want = list(loc)
    if not want:  # the file as a whole
        return None
    table: list[str | int] = []
    arrays: dict[tuple[str, ...], int] = {}  # [[array]] header -> elements seen so far
    best = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            double = line.startswith("[[")
            parsed = dotted_key(line, 2 if double else 1)
            if parsed is None:
                continue
            names = parsed[0]
            if double:
                arrays[tuple(names)] = arrays.get(tuple(names), 0) + 1
            # A table inside an array of tables belongs to its last element.
            table = []
            for i, name in enumerate(names):
                table.append(name)
                if tuple(names[: i + 1]) in arrays:
                    table.append(arrays[tuple(names[: i + 1])] - 1)
            if want[: len(table)] == table or (best is None and table[: len(want)] == want):
                best = n
            continue
        parsed = dotted_key(line)
        if parsed is None or not line.startswith("=", parsed[1]):
            continue
        full = table + parsed[0]
        if full == want[: len(full)]:
            if len(full) == len(want):
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
        elif err["type"] == "string_pattern_mismatch":
            msg = f"{err['input']!r} is not allowed here (it must match {err['ctx']['pattern']})"
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


# Source names become store item names (NAME-src): a plain word, never a path.
SOURCE_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
# Board names (their folders' names) name store items and go into /init's header.
BOARD_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]*"


def _sources(table: dict[str, Any], path: Path, text: str, prefix: tuple[str, ...]
             ) -> dict[str, Source]:
    out = {}
    for name, spec in table.items():
        if not re.fullmatch(SOURCE_NAME, name):
            raise BoardError(f"{name!r} is not a source name (letters, digits, . _ + -)",
                             where=_where(path, text, *prefix, name))
        out[name] = _validate(Source, spec, path, text, {}, (*prefix, name))
    return out


def lock_path(board_dir: Path) -> Path:
    """The lock a board folder uses: common/lock.toml beside it."""
    return board_dir.parent / COMMON / LOCK


# What an entry not locked yet stands in for, for `sources update` to fill: a version
# lower than any real one and a hash no file has.
UNLOCKED_VERSION = "0~"
UNLOCKED_SHA256 = "0" * 64


def load_lock(path: Path, unlocked: set[str] | None = None) -> Lock:
    """Read a lock file: sources by name (each checked where it stands) and toolchains.

    With ``unlocked`` (a set to fill), a Debian source added without its version and
    sha256 is taken with stand-ins and its name added to the set (`sources update`
    locks it); otherwise such an entry is an error at its line."""
    data, text = read_toml(path)
    sources = data.get("sources", {})
    if not isinstance(sources, dict):
        raise BoardError("sources must be a table of named sources ([sources.NAME])",
                         where=_where(path, text, "sources"))
    if unlocked is not None:
        sources = dict(sources)
        for name, spec in sources.items():
            if isinstance(spec, dict) and (spec.get("debian") or spec.get("deb")) \
                    and "version" not in spec and "sha256" not in spec:
                sources[name] = {**spec, "version": UNLOCKED_VERSION, "sha256": UNLOCKED_SHA256}
                unlocked.add(name)
    checked = _sources(sources, path, text, ("sources",))
    return _validate(Lock, {**data, "sources": checked}, path, text, {})


def _where(path: Path, text: str, *key: str | int) -> str:
    line = key_line(text, key)
    return f"{path}:{line}" if line else str(path)


def load_board(name_or_path: str, system: Path | None = None,
               _chain: tuple[str, ...] = ()) -> Board:
    """Load, validate and resolve a board folder by name or path; ``system`` replaces
    its [system]. A board whose kernel comes from another (kernel.from) gets that
    board, loaded and checked, as its kernel_owner (``_chain``: the boards whose
    kernel.from led here, to refuse a cycle)."""
    bdir = find_board(name_or_path)
    path = bdir / "board.toml"
    if not re.fullmatch(BOARD_NAME, bdir.name):
        raise BoardError(f"{bdir.name!r} is not a board name (letters, digits, . _ + -)",
                         where=str(bdir), hint="rename the board's folder")
    data, text = read_toml(path)
    for injected in ("name", "dir", "kernel_owner", "locked_toolchain"):
        if injected in data:
            what = {"kernel_owner": "kernel.from", "locked_toolchain": "the lock's"}.get(
                injected, "its folder")
            raise BoardError(f"{injected}: unknown key (the board's {injected} is {what})",
                             where=_where(path, text, injected))
    sources: dict[str, Source] = {}
    common = lock_path(bdir)
    lock = load_lock(common) if common.is_file() else Lock()
    sources.update(lock.sources)
    own = data.get("sources", {})
    if not isinstance(own, dict):
        raise BoardError("sources must be a table of named sources ([sources.NAME])",
                         where=_where(path, text, "sources"))
    sources.update(_sources(own, path, text, ("sources",)))
    triplet = str(data.get("cross_compile", "")).rstrip("-")
    locked_toolchain = {**lock.toolchains.get(HOST, {}), **lock.toolchains.get(triplet, {})}
    data = {**data, "sources": sources, "name": bdir.name, "dir": bdir,
            "locked_toolchain": locked_toolchain}
    kernel = data.get("kernel")
    if isinstance(kernel, dict) and "from" in kernel:
        owner = _kernel_owner(bdir, path, text, kernel, _chain)
        data["kernel_owner"] = owner
        data["kernel"] = {**{k: getattr(owner.kernel, k) for k in KERNEL_BUILD_KEYS},
                          **{k: v for k, v in kernel.items() if k != "from"}}
    sys_where = str(system) if system is not None else str(path)
    context = {"dir": bdir, "find_overlay": lambda name: find_overlay(name, sys_where),
               **load_context()}
    if system is not None:
        data.pop("system", None)
    board: Board = _validate(Board, data, path, text, context)
    if problems := board.mismatches():
        raise _problems([(path, text, loc, msg) for loc, msg in problems])
    if system is not None:
        loaded, sys_text = _load_system(system)
        board = board.model_copy(update={"system": loaded})
        board = apply_system(board, system, sys_text, ())
    elif board.system is not None:
        board = apply_system(board, path, text, ("system",))
    if board.kernel_owner is not None:
        check_shared_kernel(board, path, text)
    check_references(board, path, text, common)
    check_fragments(board, path, text)
    return resolve_raw_blobs(board, path, text)


def resolve_raw_blobs(board: Board, path: Path, text: str) -> Board:
    """The SD card's raw blobs named by an environment variable, resolved to the file it
    names now (unset: the blob is left out); each must fit the space reserved for it."""
    if board.sdcard is None:
        return board
    raw = []
    for i, r in enumerate(board.sdcard.raw):
        if r.env is not None and os.environ.get(r.env):
            file = Path(os.environ[r.env]).expanduser()
            if not file.is_file():
                raise BoardError(f"sdcard.raw[{i}].env: ${r.env} names {file}, which is not a "
                                 "file", where=_where(path, text, "sdcard", "raw", i, "env"),
                                 hint=f"point ${r.env} at the {r.name} blob, or unset it to "
                                 "build the image without it")
            r = r.model_copy(update={"file": file.resolve()})
        if r.file is not None and (size := r.file.stat().st_size) > r.size:
            raise BoardError(f"sdcard.raw[{i}]: {r.file} is {size:,} bytes, more than the "
                             f"{r.size:,} reserved for {r.name}",
                             where=_where(path, text, "sdcard", "raw", i, "size"),
                             hint="give the right file, or reserve more (without overlapping "
                             "what follows)")
        raw.append(r)
    return board.model_copy(update={"sdcard": board.sdcard.model_copy(update={"raw": raw})})


def _key(loc: tuple[str | int, ...]) -> str:
    """A key path as the user writes it: sdcard.raw[1].offset."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")


# What makes a kernel (its store item): a board with kernel.from takes these from the
# board named there. The rest of [kernel] (cmdline, the DTB, packaging) stays its own.
KERNEL_BUILD_KEYS = ("source", "base", "fragments", "patches", "image")


def _kernel_owner(bdir: Path, path: Path, text: str, kernel: dict[str, Any],
                  chain: tuple[str, ...]) -> Board:
    """The board named by kernel.from, loaded: a sibling folder of this board, else a
    board of the search path. Refuses build keys beside ``from``, itself and cycles."""
    name = kernel["from"]
    where = _where(path, text, "kernel", "from")
    if not isinstance(name, str) or not re.fullmatch(BOARD_NAME, name):
        raise BoardError(f"kernel.from: {name!r} is not a board name (letters, digits, . _ + -)",
                         where=where)
    for key in KERNEL_BUILD_KEYS:
        if key in kernel:
            raise BoardError(
                f"kernel.{key}: this board takes its kernel from {name} (kernel.from), whose "
                f"board.toml sets {key}",
                where=_where(path, text, "kernel", key),
                hint=f"change it in {name}'s board.toml (it changes both boards' kernel), or "
                "drop kernel.from to build a kernel of this board's own")
    if name == bdir.name:
        raise BoardError("kernel.from names this board itself", where=where,
                         hint="name the board whose kernel this one boots")
    if name in chain:
        cycle = " -> ".join([*chain, bdir.name, name])
        raise BoardError(f"kernel.from makes a cycle: {cycle}", where=where,
                         hint="one board of the cycle must build its own kernel")
    sibling = bdir.parent / name
    if (sibling / "board.toml").is_file():
        found = str(sibling)
    elif name in (known := known_boards()):
        found = str(known[name])
    else:
        names = sorted({*known, *(d.name for d in bdir.parent.iterdir()
                                  if (d / "board.toml").is_file())} - {bdir.name})
        raise BoardError(f"kernel.from: no board {name!r}", where=where,
                         hint=f"boards: {', '.join(names) or 'none'}")
    owner = load_board(found, _chain=(*chain, bdir.name))
    # A chain ends at the board that builds the kernel: that is the one store item.
    return owner.kernel_owner or owner


def check_shared_kernel(board: Board, path: Path, text: str) -> None:
    """A kernel taken from another board must run this board's userland: same arch and
    toolchain, and no board's initramfs built into it."""
    owner = board.kernel_owner
    assert owner is not None
    from_key = ("kernel", "from")
    if board.arch != owner.arch:
        raise BoardError(f"arch {board.arch.value!r}, but the kernel of {owner.name} "
                         f"(kernel.from) is built for {owner.arch.value!r}",
                         where=_where(path, text, "arch"),
                         hint="take the kernel of a board of the same arch")
    if board.cross_compile != owner.cross_compile:
        raise BoardError(f"cross_compile {board.cross_compile!r}, but the kernel of "
                         f"{owner.name} (kernel.from) is built with {owner.cross_compile!r}",
                         where=_where(path, text, "cross_compile"),
                         hint="the userland and the kernel it runs on need the same "
                         f"toolchain: use {owner.cross_compile!r}")
    if owner.system is not None and owner.system.initramfs == "builtin":
        raise BoardError(f"the kernel of {owner.name} holds {owner.name}'s own initramfs "
                         '(initramfs = "builtin"): it cannot boot another board\'s system',
                         where=_where(path, text, *from_key),
                         hint=f'give {owner.name} initramfs = "separate", or build a kernel '
                         "of this board's own")
    if board.system is not None and board.system.initramfs == "builtin":
        raise BoardError(f'initramfs = "builtin" needs a kernel of this board\'s own, not '
                         f"the one of {owner.name} (kernel.from)",
                         where=_where(path, text, "system", "initramfs"),
                         hint='use initramfs = "separate" (U-Boot loads it beside the kernel)')


def _problems(problems: list[tuple[Path, str, tuple[str | int, ...], str]]) -> BoardError:
    """One error for (file, its text, key path, message) problems, each at its line."""
    lines = []
    for file, text, loc, msg in problems:
        lines.append(f"{_where(file, text, *loc)}: {_key(loc)}: {msg}")
    if len(lines) == 1:
        where, rest = lines[0].split(": ", 1)
        return BoardError(rest, where=where)
    return BoardError(f"{len(lines)} problems:\n  " + "\n  ".join(lines),
                      where=str(problems[0][0]))


def check_fragments(board: Board, path: Path, text: str) -> None:
    """Every Kconfig fragment is read and merged here, so a fragment that is not UTF-8,
    not Kconfig, or contradicts another is refused by `show` as by `build`."""
    from embedbuild.kconfig import merge_fragments

    groups: list[tuple[tuple[str, ...], list[Path]]] = [(("kernel", "fragments"),
                                                         board.kernel.fragments)]
    if board.userland is not None:
        groups.append((("userland", "busybox"), board.userland.busybox))
    if board.uboot.build is not None:
        groups.append((("uboot", "build", "fragments"), board.uboot.build.fragments))
    for key, fragments in groups:
        try:
            merge_fragments({f: read_text(f, "a Kconfig fragment is plain text")
                             for f in fragments})
        except BoardError as e:
            if e.where is None:  # a conflict names both lines; the list is where they meet
                e.where = _where(path, text, *key)
                e.message = f"{'.'.join(key)}: {e.message}"
            raise


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file (a regular file of at most MAX_TEXT bytes); a byte that is not
    UTF-8 is an error at its line."""
    try:
        data = read_file(path, limit=MAX_TEXT, follow_symlinks=True)
    except FetchError as e:
        raise BoardError(f"cannot read: {e.message}", where=str(path)) from None
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise BoardError(f"not UTF-8 text (byte {e.start})", where=f"{path}:{line}",
                         hint=f"{what}: fix or remove that byte") from None


def check_references(board: Board, path: Path, text: str, common: Path) -> None:
    """Every name the board uses must resolve: sources, the userland its system needs,
    overlays that do not collide with each other or with the generated files."""
    from embedbuild.rootfs.owners import check_overlays

    known = ", ".join(sorted(board.sources)) or "none"
    hint = f"define it under [sources] or in {common}; known: {known}"
    # A shared kernel's source is its owner's (checked when the owner loaded).
    if board.kernel_owner is None and board.kernel.source not in board.sources:
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
    if board.cross_compile not in TOOLCHAIN_ELF:
        raise BoardError(f"no userland is known for toolchain {board.cross_compile!r}, so "
                         "its system cannot be built",
                         where=_where(path, text, "cross_compile"),
                         hint=f"use one of: {', '.join(TOOLCHAIN_ELF)}")
    if board.system.initramfs == "separate" and board.uboot.ramdisk_addr is None:
        raise BoardError("the system's initramfs is loaded separately, but [uboot] has no "
                         "ramdisk_addr to load it to",
                         where=_where(path, text, "uboot"),
                         hint='set uboot.ramdisk_addr, or initramfs = "builtin" in the system')
    recipes = userland(board.system.packages)
    for r in recipes:
        if (why := r.refusal(board)) is not None:
            raise BoardError(why.message, where=_where(path, text, *why.key), hint=why.hint)
    libc = registry().get(board.userland.libc)  # None: the toolchain's own
    for r in [*recipes, *([libc] if libc else [])]:
        for name in r.sources:
            if name not in board.sources:
                raise BoardError(f"no source named {name!r} for package {r.name}",
                                 where=_where(path, text, "system", "packages"), hint=hint)
    check_overlays(board.system, board.name, [d for r in recipes for d in r.dirs])


def load_system(path: Path) -> System:
    """A system file (the same keys as a board's [system] table), overlays resolved."""
    return _load_system(path)[0]


def _load_system(path: Path) -> tuple[System, str]:
    data, text = read_toml(path)
    return _validate(System, data, path, text,
                     {"find_overlay": lambda name: find_overlay(name, str(path)),
                      "dir": path.resolve().parent, **load_context()}), text


def apply_system(board: Board, path: Path, text: str, prefix: tuple[str, ...]) -> Board:
    """What a system asks of its board, checked against it (errors at the system's file
    and line: ``path``, ``text``, its keys under ``prefix``): the kernel fragments and
    command line it adds (merged into the board's kernel), the radios and wired
    interfaces its access point uses, the passphrase file (read and checked), and the
    access point's services added to the system's."""
    system = board.system
    assert system is not None
    if system.kernel is not None and (system.kernel.fragments or system.kernel.cmdline):
        if board.kernel_owner is not None:
            raise BoardError(f"the system adds to the kernel, but {board.name} boots the "
                             f"kernel of {board.kernel_owner.name} (kernel.from)",
                             where=_where(path, text, *prefix, "kernel"),
                             hint="build this board's own kernel, or drop the system's [kernel]")
        cmdline = " ".join(c for c in (board.kernel.cmdline, system.kernel.cmdline) if c)
        kernel = board.kernel.model_copy(update={
            "fragments": [*board.kernel.fragments, *system.kernel.fragments],
            "cmdline": cmdline})
        board = board.model_copy(update={"kernel": kernel})
    if system.access_point is None:
        return board
    ap = system.access_point
    key = (*prefix, "access_point")
    radios = {r.name: r for r in board.radios}
    problems: list[tuple[Path, str, tuple[str | int, ...], str]] = []
    for i, use in enumerate(ap.radios):
        radio = radios.get(use.radio)
        if radio is None:
            problems.append((path, text, (*key, "radios", i, "radio"),
                             f"board {board.name} has no radio {use.radio!r} (its radios: "
                             f"{', '.join(radios) or 'none'}; board.toml [[radios]])"))
        elif use.channel not in CHANNELS[radio.band]:
            problems.append((path, text, (*key, "radios", i, "channel"),
                             f"channel {use.channel} is not a {radio.band} channel "
                             f"({use.radio} is a {radio.band} radio: channels "
                             f"{_ranges(CHANNELS[radio.band])})"))
    for i, member in enumerate(ap.lan.members):
        if member not in board.interfaces:
            problems.append((path, text, (*key, "lan", "members", i),
                             f"board {board.name} has no wired interface {member!r} (its "
                             f"interfaces: {', '.join(board.interfaces) or 'none'}; "
                             "board.toml interfaces)"))
        elif system.network is not None and system.network.interface == member:
            problems.append((path, text, (*key, "lan", "members", i),
                             f"{member} is the system's network interface ([network]) and "
                             "cannot also be a bridge member: the LAN address goes on the "
                             "bridge (access_point.lan.address); drop [network]"))
    if problems:
        raise _problems(problems)
    passphrase = read_passphrase(ap.passphrase_file, board, path,
                                 _where(path, text, *key, "passphrase_file"))
    syslog = any(s.name == ap_files.SYSLOG for s in system.services)
    services = [*system.services, *ap_files.services(ap, radios, syslog)]
    try:
        service_order(services)
    except ValueError as e:
        raise BoardError(f"services: {e}", where=_where(path, text, *key)) from None
    system = system.model_copy(update={"access_point": ap.with_passphrase(passphrase),
                                       "services": services})
    return board.model_copy(update={"system": system})


def _ranges(values: tuple[int, ...]) -> str:
    """1-13, or 36, 40, ... for a list of channels."""
    if list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ", ".join(map(str, values))


# At most this many bytes are read of a passphrase file (a passphrase is 63 at most).
MAX_SECRET = 4096


def secrets_dir() -> Path:
    """Where passphrase files named without a path are: $EMBEDBUILD_SECRETS, else
    ~/.config/embedbuild/secrets (or under $XDG_CONFIG_HOME)."""
    if env := os.environ.get("EMBEDBUILD_SECRETS"):
        return Path(env)
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "embedbuild" / "secrets"


def read_passphrase(name: str, board: Board, system_file: Path, where: str) -> str:
    """The passphrase of ``passphrase_file``: a name in the secrets folder, or a path
    (absolute or ~). The file must be outside every shared place (the project, the
    board's and the system's folders, overlays, any git work tree), a regular file only
    its owner can read, holding one line of 8..63 printable ASCII characters."""
    hint = (f"keep it in {secrets_dir()} (or $EMBEDBUILD_SECRETS), readable by you only: "
            "chmod 600 FILE")
    if name.startswith(("/", "~")):
        file = Path(name).expanduser()
    elif "/" in name or name in (".", ".."):
        raise BoardError(f"passphrase_file {name!r}: give a file name (in the secrets "
                         "folder) or an absolute path", where=where, hint=hint)
    else:
        file = secrets_dir() / name
    try:
        real = file.resolve(strict=True)
    except OSError:
        raise BoardError(f"passphrase_file: {file} does not exist", where=where,
                         hint=hint) from None
    shared = [("the project", PROJECT_BOARDS.parent), (f"board {board.name}'s folder",
                                                       board.dir.resolve()),
              ("the system file's folder", system_file.resolve().parent),
              *(("an overlay folder", d.resolve()) for d in overlays_dirs())]
    shared += [("a git work tree", p) for p in real.parents if (p / ".git").exists()]
    for what, folder in shared:
        if real.is_relative_to(folder):
            raise BoardError(f"passphrase_file: {file} is inside {what} ({folder}), where it "
                             "could be committed or shared", where=where, hint=hint)
    try:
        data = read_file(real, limit=MAX_SECRET)
    except FetchError as e:
        raise BoardError(f"passphrase_file: {e.message}", where=where, hint=hint) from None
    if real.stat().st_mode & 0o077:
        raise BoardError(f"passphrase_file: {file} can be read by others (mode "
                         f"{real.stat().st_mode & 0o777:04o})", where=where,
                         hint=f"chmod 600 {file}")
    try:
        return check_passphrase(data.decode())
    except UnicodeDecodeError:
        raise BoardError(f"passphrase_file: {file} is not text", where=where,
                         hint=hint) from None
    except ValueError as e:
        raise BoardError(f"passphrase_file: {file}: {e}", where=where,
                         hint="write the passphrase alone on the file's one line") from None


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


def user_config_path() -> Path:
    """$EMBEDBUILD_CONFIG, else config.toml in ~/.config/embedbuild (or $XDG_CONFIG_HOME)."""
    if env := os.environ.get("EMBEDBUILD_CONFIG"):
        return Path(env)
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "embedbuild" / "config.toml"


def load_user_config() -> tuple[UserConfig, Path]:
    """The user's settings (defaults when the file does not exist) and the file's path."""
    path = user_config_path()
    if not path.exists():
        return UserConfig(), path
    data, text = read_toml(path)
    return _validate(UserConfig, data, path, text, {}), path
