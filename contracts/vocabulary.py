"""The engine's vocabulary as types: states of runs and tasks, kinds of failure, attempts.

Every component names these the same way, from a step's outcome through the events
to the retry policy; nobody compares free text. The values are the words stored in
run logs and shown to users, so they never change meaning.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

import msgspec


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    """The state of a task, or of one instance of it (the task itself, or one item)."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    RETRY_DUE = "retry_due"
    """Failed, may retry; the retry is not scheduled yet."""
    RETRY_WAIT = "retry_wait"
    """Retry scheduled, waiting for its timer."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED}
)
IN_FLIGHT = frozenset({TaskStatus.DISPATCHED, TaskStatus.RUNNING})


class FailureKind(StrEnum):
    """Why an attempt failed."""

    ERROR = "error"
    """The step ran and failed (non-zero exit, an exception)."""
    TIMEOUT = "timeout"
    START = "start"
    """The step could not be started (missing image, program, function, bad arguments)."""
    EXPRESSION = "expression"
    """Its inputs, ``when`` or ``items`` could not be evaluated."""
    CANCELLED = "cancelled"
    LOST = "lost"
    """Its worker vanished (no heartbeat) or handed it back when stopping: runs again."""


RetryableKind = Literal["error", "timeout", "start"]
"""The failure kinds a retry policy may select (``FailureKind`` values; written as text so a
workflow file's error names the words a user types)."""


class AttemptRef(msgspec.Struct, frozen=True, array_like=True):
    """One attempt of one instance of a task: the key of leases, heartbeats and fencing."""

    run_id: str
    task: str
    index: int
    attempt: int


CHILD_TRIGGER = "parent:"
"""What a child run's trigger starts with (``parent:RUN``): a workflow step started it."""

TRIGGER_FILTER = r"^[a-z]+(:[A-Za-z0-9_-]+)?$"
"""What a list of runs may be narrowed to by what started them: a kind (``cli``,
``api``, ``webhook``, ...) or one trigger of a kind (``webhook:push``)."""

SECRET_MARK = "\x1esecret:{name}\x1e"
"""What a secret parameter's value is everywhere but on the worker that runs the step:
the name of the worker's environment variable that holds it, marked. The worker swaps
the mark in a step's ``env`` for the value, and masks the value in everything the step
reports."""
SECRET_MARKS = re.compile("\x1esecret:([A-Za-z_][A-Za-z0-9_]*)\x1e")
"""Finds the marks of ``SECRET_MARK`` in a text; the group is the variable's name."""

CLAIM_KEY = "$claim"
"""A value stored in the artifact store travels as ``{"$claim": <reference>}``."""
