"""A locked source: where to get one file, its exact version, and the sha256 it must have."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Debian policy's package names, and versions ([epoch:]upstream[-revision]).
DEBIAN_NAME = r"^[a-z0-9][a-z0-9+.-]+$"
DEBIAN_VERSION = r"^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$"
# A download nobody gave a size for is still bounded (the kernel tarball is 138 MB).
MAX_SIZE = 4 << 30


class Source(BaseModel):
    """One source file, locked by exact version and sha256.

    Exactly one of ``file``, ``debian``, ``deb`` or ``url`` says where it comes from.

    Args:
        file: a local file (an absolute path).
        debian: a Debian source package; ``version`` and ``filename`` pick the file.
        deb: a Debian binary package; ``version`` picks the package, ``member`` the file
            it installs that is the source (e.g. linux-source-6.1's kernel tarball).
        url: an https URL.
        version: the exact Debian version (for ``debian`` and ``deb``).
        filename: for ``debian``: which file of the source package to take.
        member: for ``deb``: the path the package installs the file at.
        sha256: the locked hash of the file; a mismatch is an error and the file is not used.
        size: the file's size in bytes: no download of it may grow larger.
        strip: leading path components removed when unpacking.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path | None = None
    debian: str | None = Field(default=None, pattern=DEBIAN_NAME)
    deb: str | None = Field(default=None, pattern=DEBIAN_NAME)
    url: str | None = None
    version: str | None = Field(default=None, pattern=DEBIAN_VERSION)
    filename: str | None = None
    member: str | None = None
    sha256: str
    size: int | None = Field(default=None, gt=0, le=MAX_SIZE)
    strip: int = Field(default=1, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _locked(cls, data: object) -> object:
        # A Debian source added without version and hash is what `sources update` fills.
        if isinstance(data, dict) and (data.get("debian") or data.get("deb")) \
                and "sha256" not in data:
            raise ValueError("not locked yet (no version and sha256): lock it with "
                             "`embedbuild sources update NAME`")
        return data

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

    @field_validator("member")
    @classmethod
    def _member_path(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("/") or any(
                p in ("", ".", "..") for p in v.split("/"))):
            raise ValueError(f"{v!r} must be the relative path the package installs the "
                             "file at (e.g. usr/src/linux-source-6.1.tar.xz)")
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
        origins = [o for o in ("file", "debian", "deb", "url") if getattr(self, o) is not None]
        if len(origins) != 1:
            raise ValueError("give exactly one of file, debian, deb or url")
        if self.debian is not None and self.filename is None:
            raise ValueError("a debian source needs 'filename' (e.g. busybox_1.35.0.orig.tar.bz2)")
        if self.deb is not None and self.member is None:
            raise ValueError("a deb source needs 'member': the file of the package to take "
                             "(e.g. usr/src/linux-source-6.1.tar.xz)")
        if (self.debian or self.deb) and self.version is None:
            raise ValueError(f"{origins[0]} = {self.debian or self.deb!r} has no exact version: "
                             "lock it with `embedbuild sources update NAME`")
        for key, origin in (("filename", "debian"), ("member", "deb")):
            if getattr(self, key) is not None and getattr(self, origin) is None:
                raise ValueError(f"'{key}' belongs to a {origin} source")
        return self

    @property
    def limit(self) -> int:
        """The most bytes a download of this file may take."""
        return self.size or MAX_SIZE

    def describe(self) -> str:
        """Where the file comes from, for messages: 'Debian package X=V (member)'."""
        if self.deb is not None:
            return f"Debian package {self.deb}={self.version} ({self.member})"
        if self.debian is not None:
            return f"Debian source package {self.debian}={self.version} ({self.filename})"
        return str(self.file or self.url)

    @property
    def basename(self) -> str:
        """The file name this source is cached under."""
        if self.file is not None:
            return self.file.name
        if self.filename is not None:
            return self.filename
        if self.member is not None:
            return self.member.rsplit("/", 1)[-1]
        assert self.url is not None
        return self.url.rstrip("/").rsplit("/", 1)[-1]
