"""A pinned source: where to get one file, and the sha256 it must have."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Source(BaseModel):
    """One source archive, pinned by its sha256.

    Exactly one of ``file``, ``debian`` or ``url`` says where it comes from.

    Args:
        file: a local file, e.g. /usr/src/linux-source-6.1.tar.xz.
        debian: a Debian source package name; ``filename`` picks its file.
        url: an https URL.
        filename: for ``debian``: which file of the source package to take.
        sha256: the pinned hash; a mismatch is an error and the file is not used.
        strip: leading path components removed when unpacking.
        version: the exact version it is (for a Debian source package, its version).
        size: the file's size in bytes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path | None = None
    # Debian policy's source package names.
    debian: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9+.-]+$")
    url: str | None = None
    filename: str | None = None
    sha256: str
    strip: int = Field(default=1, ge=0)
    version: str | None = None
    size: int | None = Field(default=None, gt=0)

    @field_validator("file")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        # Relative to what? Not to wherever embedbuild happens to be run from.
        if v is not None and not v.is_absolute():
            raise ValueError(f"{v} must be an absolute path")
        return v

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None and ("/" in v or v in (".", "..")):
            raise ValueError(f"{v!r} must be a file name of the source package, not a path")
        return v

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 lowercase hex digits")
        return v

    @field_validator("url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("only https:// URLs are fetched")
        if v is not None and not re.fullmatch(r"https://[^/\s]+/\S*[^/\s]", v):
            raise ValueError(f"{v!r} is not an https URL of a file (https://HOST/PATH/FILE)")
        return v

    @model_validator(mode="after")
    def _one_origin(self) -> Self:
        origins = [o for o in ("file", "debian", "url") if getattr(self, o) is not None]
        if len(origins) != 1:
            raise ValueError("give exactly one of file, debian or url")
        if self.debian is not None and self.filename is None:
            raise ValueError("a debian source needs 'filename' (e.g. busybox_1.35.0.orig.tar.bz2)")
        return self

    @property
    def basename(self) -> str:
        """The file name this source is cached under."""
        if self.file is not None:
            return self.file.name
        if self.filename is not None:
            return self.filename
        assert self.url is not None
        return self.url.rstrip("/").rsplit("/", 1)[-1]
