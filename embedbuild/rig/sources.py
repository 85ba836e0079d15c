"""Every boot source by name: rig/bootsource.py's own and those in modules of their own,
each imported here so that it registers (a new one is one more import line)."""

from __future__ import annotations

from embedbuild.rig import signedfit  # noqa: F401  (signed-fit)
from embedbuild.rig.bootsource import BOOT_SOURCES, default_source

__all__ = ["BOOT_SOURCES", "default_source"]
