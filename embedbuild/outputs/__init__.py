"""The outputs, one module each (what an output is: embedbuild/output.py). Adding an
output is adding a module here."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from embedbuild.model.board import Board
from embedbuild.output import REGISTRY, Output, section_types


def registry() -> dict[str, Output]:
    """Every output by name, sorted by name (the modules imported once)."""
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{mod}")
    return dict(sorted(REGISTRY.items()))


def applicable(board: Board) -> list[Output]:
    """The outputs that apply to a board, sorted by name."""
    return [o for o in registry().values() if o.applies(board)]


def sections() -> dict[str, Any]:
    """The manifest sections all outputs declare (key -> type)."""
    registry()
    return section_types()
