"""The traceback a step's author reads: from their own code on.

A step's exception passes through the frames that called it (the step thread, the
``@task`` wrapper, the child process's loop). They say nothing about the step and push
its own frames out of the last lines a failed run shows, so they are left out. When no
frame is the author's (the call itself failed, say on its arguments), all are kept.

Imports only the standard library: the Python child process loads it.
"""

from __future__ import annotations

import os
import traceback
from types import TracebackType

_OURS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), package, "")
    for package in ("contracts", "conveyor", "engine", "workers")
)


def step_traceback(exc: BaseException) -> str:
    """``traceback.format_exception`` of ``exc`` without the engine's calling frames."""
    return "".join(traceback.format_exception(type(exc), exc, _from_step(exc.__traceback__)))


def _from_step(tb: TracebackType | None) -> TracebackType | None:
    first = tb
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OURS):
        tb = tb.tb_next
    return tb if tb is not None else first
