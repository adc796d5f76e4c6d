"""A run's workflow as its submission carries it (data), made the workflow model once
per distinct workflow: a trigger's runs, a schedule's and a workflow step's thousand
child runs all carry the same one. The models are frozen, so runs share them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec

from contracts.spec import Workflow

WORKFLOWS_KEPT = 64
"""Distinct workflows kept made (each with its data as the key)."""


def workflow_of(data: dict[str, Any]) -> Workflow:
    """``data`` as the workflow model: validated, not checked again (a run is read as it
    was made, whatever a later version of the checks would say of it)."""
    return _validated(msgspec.json.encode(data))


@lru_cache(maxsize=WORKFLOWS_KEPT)
def _validated(data: bytes) -> Workflow:
    return Workflow.model_validate(msgspec.json.decode(data))
