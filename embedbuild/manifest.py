"""manifest.json: what a build result holds and how U-Boot boots it.

Written by the result step, read by `size`, the bench (rig/) and the tests: the one
description of a result that everything after the build trusts. What every result
has (the board, its files) is declared here; every other top-level key is a section
an output declares (embedbuild/outputs/), checked against that declaration when the
manifest is made and when it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

from embedbuild.errors import EmbedbuildError
from embedbuild.outputs import sections

FILENAME = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileInfo(_Model):
    """One file of the result: what it is for, its size and sha256."""

    role: str
    size: int
    sha256: str


class Manifest(_Model):
    """A build result's manifest.json: the board, the outputs and their files, and the
    outputs' sections as attributes (``manifest.kernel``, ``manifest.sdcard``; None for
    a section this result has not)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    board: str
    arch: str
    description: str
    outputs: list[str]
    files: dict[str, FileInfo]

    @model_validator(mode="after")
    def _sections(self) -> Self:
        types = sections()
        extra = self.__pydantic_extra__ or {}
        for key, value in list(extra.items()):
            if key not in types:
                raise ValueError(f"{key!r} is no section an output declares "
                                 f"({', '.join(sorted(types))})")
            if value is None:  # written as null: the result has no such section
                del extra[key]
            else:
                extra[key] = TypeAdapter(types[key]).validate_python(value)
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # the sections this result has
        except AttributeError:
            if name in sections():
                return None
            raise

    @classmethod
    def read(cls, result: Path) -> Manifest:
        """The manifest of a result folder."""
        path = result / FILENAME
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError) as e:
            raise EmbedbuildError(f"not a readable build result: {e}", where=str(path),
                                  hint="build the board again (embedbuild build BOARD)") from None

    def write(self, result: Path) -> None:
        """Write manifest.json into a result folder."""
        (result / FILENAME).write_text(self.model_dump_json(indent=2) + "\n")

    def with_role(self, role: str) -> list[str]:
        """Names of the files with this role."""
        return [name for name, f in self.files.items() if f.role == role]
