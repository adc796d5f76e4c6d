"""Values kept in the artifact store in a chosen format, for results JSON cannot carry.

A Python task may ask for its result to be serialised (``result_serializer="pickle"``
or ``"parquet"``, or ``"json"`` to keep it out of line). Its code gives the worker an
``EncodedValue``; the worker stores the bytes under a key no other writer uses and the
result travels as ``{"$stored": {...reference, "format": ...}}``. A worker about to
run a step that receives such a reference fetches the bytes and hands the function a
``StoredValue``, which the task decodes into the declared type.

Only the worker makes a ``StoredValue`` (a Python object, never JSON), so a parameter or
a webhook body that imitates a reference cannot make a step unpickle what it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STORED_KEY = "$stored"
VALUE_FORMATS = ("json", "pickle", "parquet", "jsonl")
STREAMED_FORMAT = "jsonl"
"""JSON Lines, one item per line: a list a fan-out can take without anyone holding it
whole (its reference also carries ``count``, the number of items)."""
MAX_VALUE_BYTES = 64 << 20
"""Largest result or output parameter a step may give (``CONVEYOR_MAX_RESULT_BYTES``):
anything over the workers' inline limit (64 KiB) goes to the artifact store, but every
consumer of the value still holds it whole in memory."""
VALUES_FOLDER = "~values"
"""The folder under an attempt's key where stored values go; an artifact name (letters,
digits, ``_`` and ``-``) can never be this, so nothing but a stored value is there."""


@dataclass(frozen=True, slots=True)
class EncodedValue:
    """A step's result, encoded by its task, for the worker to store."""

    data: bytes
    format: str


@dataclass(frozen=True, slots=True)
class StoredValue:
    """A stored value fetched by the worker for the step that receives it."""

    data: bytes
    format: str


def is_stored(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and STORED_KEY in value


def streamed_count(value: Any) -> int | None:
    """The number of items of a stored JSON Lines value; None for anything else."""
    if not is_stored(value):
        return None
    reference = value[STORED_KEY]
    if not isinstance(reference, dict) or reference.get("format") != STREAMED_FORMAT:
        return None
    count = reference.get("count")
    return count if isinstance(count, int) and count >= 0 else None
