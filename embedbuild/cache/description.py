"""A cache's description of an item (``items/KEY.json``) as one strict model, checked in
full before a byte of its archive is read: types and ranges, entry kinds, paths that are
relative and stay inside the item (every parent a described folder, never a symlink),
the archive named only by the cache's own ``archives/<sha256>.tar.zst``, sizes that add
up, and the item's record consistent with its key and name."""

from __future__ import annotations

import posixpath
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationError, model_validator

from embedbuild.itemrecord import Entry, ItemInfo, ItemName, Record, Sha256, StepName, why_invalid

# Bumped when what a description holds changes; substituters refuse other formats.
FORMAT = 1
SUFFIX = ".tar.zst"
# A description lists every file of an item: a kernel source tree's is about 15 MiB.
MAX_DESCRIPTION = 64 << 20
# Archives and trees up to 1 TiB (a sanity bound: the free-space check decides).
MAX_SIZE = 1 << 40
# An item may unpack to this many times its archive's size (a kernel tree: about 6),
# or to EXPANSION_FLOOR whatever its archive: a zstd bomb, however honestly described
# (3 GiB of zeros in 100 KB), is refused before its archive is read.
MAX_EXPANSION = 100
EXPANSION_FLOOR = 64 << 20
# Linux: PATH_MAX and NAME_MAX.
MAX_PATH, MAX_NAME = 4095, 255


class DescriptionError(ValueError):
    """The description is not one this embedbuild takes (the reason, in words)."""


def _relative_path(rel: str) -> str:
    """'.' or a normalised relative path inside the item (no '..', no '//', no '/.')."""
    if rel == ".":
        return rel
    parts = rel.split("/")
    if (not rel or rel.startswith("/") or len(rel) > MAX_PATH or "\0" in rel
            or any(p in ("", ".", "..") or len(p) > MAX_NAME for p in parts)):
        raise ValueError(f"{rel[:80]!r} is not a relative path inside the item")
    return rel


RelPath = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH)]


class ArchiveRef(Record):
    """Where the item's archive is and what it must be."""

    path: str
    sha256: Sha256
    size: Annotated[int, Field(gt=0, le=MAX_SIZE)]
    compression: Literal["zstd"]

    @model_validator(mode="after")
    def _own_name(self) -> ArchiveRef:
        # The cache's own name for this archive and nothing else: no other file of the
        # cache, and nothing outside it.
        if self.path != archive_path(self.sha256):
            raise ValueError(f"archive path {self.path[:100]!r} is not "
                             f"{archive_path(self.sha256)!r}")
        return self


class Description(Record):
    """items/KEY.json, signature included (checked apart, over the canonical JSON)."""

    format: Literal[1]
    key: Sha256
    name: StepName
    item: ItemName
    info: ItemInfo
    references: list[ItemName]
    files: dict[RelPath, Entry]
    size: Annotated[int, Field(ge=0, le=MAX_SIZE)]
    archive: ArchiveRef
    signature: Annotated[str, StringConstraints(max_length=1024)]

    @model_validator(mode="after")
    def _consistent(self) -> Description:
        if self.item != f"{self.key[:32]}-{self.name}":
            raise ValueError(f"item {self.item!r} is not this key's and name's")
        if (self.info.key, self.info.name) != (self.key, self.name):
            raise ValueError("its record is for another key or name")
        if self.references != self.info.deps:
            raise ValueError("references differ from the record's deps")
        root = self.files.get(".")
        if root is None or root.type != "dir":
            raise ValueError("files: '.' (the item itself) must be a folder")
        for rel in self.files:
            _relative_path(rel)
            parent = posixpath.dirname(rel) or "."
            if rel != "." and getattr(self.files.get(parent), "type", None) != "dir":
                raise ValueError(f"files: the parent of {rel[:80]!r} is not a described "
                                 "folder")
        total = sum(e.size for e in self.files.values() if e.type == "file")
        if total != self.size:
            raise ValueError(f"size {self.size} is not the sum of its files' ({total})")
        return self

    def expansion_allowed(self) -> int:
        """The most bytes this item's archive may unpack to (MAX_EXPANSION)."""
        return max(MAX_EXPANSION * self.archive.size, EXPANSION_FLOOR)

    def space_needed(self) -> int:
        """Bytes the unpacked tree takes on disk, roughly: each file rounded up to 4 KiB
        blocks, a block for each folder and symlink."""
        block = 4096
        return sum(-(-e.size // block) * block if e.type == "file" else block
                   for e in self.files.values())

    def files_record(self) -> dict[str, dict]:
        """The files as the store records them (rel path -> type, mode, size, sha256)."""
        return {rel: e.model_dump() for rel, e in self.files.items()}


def archive_path(sha256: str) -> str:
    """Where a cache keeps the archive with this sha256."""
    return f"archives/{sha256}{SUFFIX}"


def description_path(key: str) -> str:
    """Where the description of the item with this step key lives in a cache."""
    return f"items/{key}.json"


def validate(data: object) -> Description:
    """The description, checked in full; DescriptionError naming the first bad field."""
    try:
        return Description.model_validate(data)
    except ValidationError as e:
        raise DescriptionError(f"ill-formed description: {why_invalid(e)}") from None
