"""Run ids: how the engine makes them, and what a user may give for one."""

from __future__ import annotations

import re
import uuid

from contracts.errors import NotFound

RUN_PREFIX = re.compile(r"[A-Za-z0-9_-]+")
"""What a run id, or a prefix of one, is made of (ids the engine makes are hexadecimal)."""


def new_run_id() -> str:
    return uuid.uuid4().hex


def run_id_of(idempotency_key: str) -> str:
    """The run an idempotency key names: the same key always gives the same run."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:{idempotency_key}").hex


def check_prefix(run: str) -> None:
    """Raise NotFound for text that is no run id or prefix of one: an empty one would
    match every run, and a store may read ``*`` or ``?`` in it as a pattern."""
    if not RUN_PREFIX.fullmatch(run):
        raise NotFound(f"no run matches {run!r}: a run id is letters, digits, _ and -")
