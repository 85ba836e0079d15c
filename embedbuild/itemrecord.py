"""The store's record of an item as typed models: ``info.json`` (what the item is and
which items it was built from) and ``files.json`` (every entry's type, mode, size and
sha256). A binary cache's description carries the same entries.

Records are read bounded (size, nesting; a regular file, not through a symlink) and
validated in full, strictly: a number written as text, a list where an object belongs
or an unknown entry type is a RecordError, never a value the store goes on with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from embedbuild.bounded import FetchError, parse_json, read_file
from embedbuild.errors import RecordError

# An info.json is a few KiB, but a step may put whatever data it depends on into its
# inputs; a description (which carries it) may hold 64 MiB. A files.json lists every
# file of an item (an unpacked kernel tree's would run to about 15 MiB).
MAX_INFO = 64 << 20
MAX_FILES = 256 << 20

def _matching(pattern: str, what: str):
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not {what}")
        return value
    return AfterValidator(check)


Sha256 = Annotated[str, _matching(r"[0-9a-f]{64}", "a sha256 (64 hex digits)")]
# A store item's folder name: 32 hex digits of its key, '-', the step's name (one path
# component: no '/', NUL or whitespace).
ItemName = Annotated[str, _matching(r"[0-9a-f]{32}-[^/\s\x00]{1,200}",
                                    "the name of a store item")]
StepName = Annotated[str, _matching(r"[^/\s\x00]{1,200}", "a step name")]
# Permission bits only: the store never holds setuid, setgid or sticky bits.
Mode = Annotated[int, Field(ge=0, le=0o777)]


class Record(BaseModel):
    """Strict: no coercion ("5" is not 5), no unknown keys, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FileEntry(Record):
    """A regular file."""

    type: Literal["file"]
    mode: Mode
    size: Annotated[int, Field(ge=0, le=1 << 50)]
    sha256: Sha256


class DirEntry(Record):
    """A folder."""

    type: Literal["dir"]
    mode: Mode


class LinkEntry(Record):
    """A symlink (never followed by the store)."""

    type: Literal["symlink"]
    link: Annotated[str, StringConstraints(min_length=1, max_length=4095,
                                           pattern=r"^[^\x00]*$")]


Entry = Annotated[FileEntry | DirEntry | LinkEntry, Field(discriminator="type")]


class ItemInfo(Record):
    """info.json: the step an item was made by, and the items it was built from."""

    kind: str
    name: StepName
    key: Sha256
    version: int
    inputs: dict[str, Any]
    outputs: dict[str, str]
    deps: list[ItemName]
    store_format: int = 0  # absent: made before the store recorded its format


def why_invalid(e: ValidationError) -> str:
    """A model's validation failure in one line: the first field and what is wrong."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top)"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{loc}: {err['msg']}{more}"


def _read(path: Path, limit: int) -> object:
    try:
        return parse_json(read_file(path, limit=limit), where=str(path))
    except FetchError as e:
        raise RecordError(f"unreadable: {e.message}", where=str(path)) from None


def read_info(path: Path) -> ItemInfo:
    """An info.json, validated; RecordError saying what is wrong."""
    data = _read(path, MAX_INFO)
    try:
        return ItemInfo.model_validate(data)
    except ValidationError as e:
        raise RecordError(f"ill-typed: {why_invalid(e)}", where=str(path)) from None


_FILES = TypeAdapter(dict[str, Entry])


def read_files(path: Path) -> dict[str, dict]:
    """A files.json, validated: rel path -> entry (as plain dicts, the form the store
    compares); RecordError saying what is wrong."""
    data = _read(path, MAX_FILES)
    try:
        files = _FILES.validate_python(data, strict=True)
    except ValidationError as e:
        raise RecordError(f"ill-typed: {why_invalid(e)}", where=str(path)) from None
    return {rel: e.model_dump() for rel, e in files.items()}
