"""The lock: every input by exact version and sha256, and the toolchain it was made with.

``boards/common/lock.toml`` holds ``[sources.NAME]`` tables (model/source.py) and
``[toolchains.NAME]`` tables: for each cross toolchain the boards use (by its GNU
triplet) and for the build host (``host``), the Debian packages and versions the lock
was written with. ``embedbuild sources update`` writes it; the loader reads it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from embedbuild.model.base import Strict
from embedbuild.model.source import DEBIAN_NAME, DEBIAN_VERSION, Source

DebianName = Annotated[str, Field(pattern=DEBIAN_NAME)]
DebianVersion = Annotated[str, Field(pattern=DEBIAN_VERSION)]
# The lock's name for the build host's own compiler and make.
HOST = "host"


class Lock(Strict):
    """A lock file, validated.

    Args:
        sources: source name -> the locked file.
        toolchains: a toolchain's triplet (or ``host``) -> Debian package -> version.
    """

    sources: dict[str, Source] = {}
    toolchains: dict[str, dict[DebianName, DebianVersion]] = {}
