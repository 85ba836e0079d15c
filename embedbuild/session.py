"""The build session for the command line, the pytest plugin and the benches: load, plan
and build a board. What is built is booted by the bench (embedbuild/rig/target.py), which
sees only the result folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedbuild import compiler_cache
from embedbuild.errors import EmbedbuildError
from embedbuild.load import load_board
from embedbuild.manifest import Manifest
from embedbuild.model.board import Board
from embedbuild.plan import Plan, plan_board
from embedbuild.scheduler import Events, realise
from embedbuild.sizereport import check_budget
from embedbuild.store import Store

if TYPE_CHECKING:
    from embedbuild.cache.substitute import Substituters


@dataclass
class Built:
    """A realised plan: every step's store path by key."""

    plan: Plan
    paths: dict[str, Path]

    @property
    def board(self) -> Board:
        return self.plan.board

    @property
    def result(self) -> Path:
        """The result folder (outputs and manifest.json)."""
        return self.paths[self.plan.result.key]

    def path(self, role: str) -> Path:
        """The store item of the step of this role."""
        return self.paths[self.plan.steps[role].key]


def plan(board: str | Board, *, system: Path | None = None,
         warn: Callable[[str], None] | None = None) -> Plan:
    """Load (unless given a Board) and plan a board; ``warn`` gets the line saying that
    the toolchain differs from the lock."""
    if isinstance(board, str):
        board = load_board(board, system)
    if warn is not None and board.locked_toolchain:
        from embedbuild.toolchain import Toolchain

        drift = Toolchain(board.cross_compile, board.arch).drift(board.locked_toolchain)
        if drift:
            warn(f"the installed toolchain differs from the lock ({'; '.join(drift)}): store "
                 f"keys differ from machines on the lock; `embedbuild doctor {board.name}`")
    return plan_board(board)


def build(board: str | Board | Plan, store: Store, *, system: Path | None = None,
          role: str = "result", events: Events | None = None,
          repair: Callable[[str], None] | None = None,
          substituters: Substituters | None = None, ccache: bool = True,
          warn: Callable[[str], None] | None = None, budget: bool = True) -> Built:
    """Plan a board (see plan(); a Plan is taken as it is) and realise the step of
    ``role``. With ``repair``, the graph's damaged items are first removed (each problem
    is passed to it), and rebuilt wherever the target needs them. ``substituters`` are
    asked for missing items before any is built. Compiles go through the compiler cache
    unless ``ccache`` is False (or EMBEDBUILD_NO_CCACHE is set); ``warn`` gets the line
    saying that ccache is missing, and the one saying the toolchain differs from the
    lock. A result over the board's size budget is a BudgetError unless ``budget`` is
    False (`embedbuild size` reports it instead)."""
    planned = board if isinstance(board, Plan) else plan(board, system=system, warn=warn)
    if role not in planned.steps:
        raise EmbedbuildError(f"board {planned.board.name} has no step {role!r}",
                              hint=f"its steps: {', '.join(planned.steps)}")
    if repair is not None:
        from embedbuild.steps.source import archive_manifest

        graph = [store.item_path(s.key, s.name) for s in planned.steps[role].walk()]
        for problem in store.repair(graph, archive_manifest):
            repair(problem)
    cache = compiler_cache.configured(ccache, warn)
    built = Built(planned, realise(store, planned.steps[role], events,
                                   substituters=substituters, ccache=cache))
    if budget and role == "result" and planned.board.size is not None:
        check_budget(planned.board, Manifest.read(built.result))
    return built
