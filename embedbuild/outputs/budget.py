"""The board's size budget ([size] budget in board.toml), written into the manifest:
`embedbuild size` prints what a boot loads against it, and a build over it fails
(embedbuild/sizereport.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from embedbuild.output import PlanContext, Published, output


class BudgetInfo(BaseModel):
    """The most bytes a boot of this board may load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int


@output("budget", applies=lambda board: board.size is not None, sections={"budget": BudgetInfo})
def plan(p: PlanContext) -> Published:
    """The size budget the board declares."""
    assert p.board.size is not None
    return Published(manifest={"budget": {"limit": int(p.board.size.budget)}})
