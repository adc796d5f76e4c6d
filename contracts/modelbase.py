"""The base of every workflow-file model, and the names they share."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
"""An environment variable's name: letters, digits and underscores."""


def _inside_the_step(path: str) -> str:
    # A step's files are read from its own directory only: never the worker's others.
    parts = PurePosixPath(path).parts
    if not path.strip() or PurePosixPath(path).is_absolute() or ".." in parts:
        raise ValueError(
            f"{path!r} must be a relative path inside the step's working directory"
            " (not absolute, no '..')"
        )
    return path


StepPath = Annotated[str, AfterValidator(_inside_the_step)]
"""A file or directory a step writes or reads, relative to its working directory."""


class Model(BaseModel):
    """Unknown fields are errors (a typo is never silently ignored); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


__all__ = ["NAME_PATTERN", "EnvName", "Model", "Name", "StepPath"]
