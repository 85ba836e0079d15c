"""`embedbuild size` as data: each output's lines (what it adds, raw and as stored),
what a boot loads in total, and the board's budget ([size] budget) against it.

A build over budget fails with BudgetError (session.build checks every result it
makes); `size` itself reports the same numbers and exits non-zero, so the table that
says where the bytes went is there when they are too many."""

from __future__ import annotations

from dataclasses import dataclass

from embedbuild.errors import EmbedbuildError
from embedbuild.load import key_line
from embedbuild.manifest import Manifest
from embedbuild.model.board import Board
from embedbuild.output import SizeLine


class BudgetError(EmbedbuildError):
    """A build result loads more bytes than its board's size budget."""


@dataclass(frozen=True)
class SizeReport:
    """A result's size lines, the bytes a boot loads, and the budget (None: none set)."""

    lines: list[SizeLine]
    loaded: int
    budget: int | None

    @property
    def left(self) -> int | None:
        """Budget minus loaded (negative: over); None without a budget."""
        return None if self.budget is None else self.budget - self.loaded

    def budget_line(self) -> str | None:
        """``budget: USED of BUDGET bytes (P%), LEFT left`` (or ``OVER over``)."""
        if self.budget is None or self.left is None:
            return None
        state = f"{self.left:,} left" if self.left >= 0 else f"{-self.left:,} over"
        return (f"budget: {self.loaded:,} of {self.budget:,} bytes "
                f"({100 * self.loaded / self.budget:.1f}%), {state}")


def size_report(m: Manifest) -> SizeReport:
    """The size report of a result: every output's lines in output order (each output
    says what it adds), their loaded bytes summed, the budget from the manifest."""
    from embedbuild.outputs import registry

    outputs = registry()
    lines = [line for name in m.outputs if (size := outputs[name].size) for line in size(m)]
    return SizeReport(lines, sum(line.loaded for line in lines),
                      m.budget.limit if m.budget is not None else None)


def check_budget(board: Board, m: Manifest) -> None:
    """Raise BudgetError when the result loads more than the board's budget, naming
    the line of board.toml that sets it."""
    report = size_report(m)
    if report.left is None or report.left >= 0:
        return
    where = board.dir / "board.toml"
    try:
        line = key_line(where.read_text(), ("size", "budget"))
    except OSError:
        line = None
    raise BudgetError(
        f"board {board.name}: a boot loads {report.loaded:,} bytes, {-report.left:,} over its "
        f"budget of {report.budget:,}",
        where=f"{where}:{line}" if line else str(where),
        hint=f"`embedbuild size {board.name}` shows where the bytes went; cut some, or raise "
        "[size] budget")
