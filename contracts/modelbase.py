"""The base of every workflow-file model, and the names they share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
"""An environment variable's name: letters, digits and underscores."""


class Model(BaseModel):
    """Unknown fields are errors (a typo is never silently ignored); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


__all__ = ["NAME_PATTERN", "EnvName", "Model", "Name"]
