"""What every model of user data shares: unknown keys are errors, values never change."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A model of user data: unknown keys are refused, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
