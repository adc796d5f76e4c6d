"""The traceback a step's author reads: from their own code on.

A step's exception passes through the frames that called it (the step thread, the
``@task`` wrapper, the child process's loop). They say nothing about the step and push
its own frames out of the last lines a failed run shows, so they are left out. When no
frame is the author's, a failure Conveyor explains (a ``StepError``: the arguments did
not fit the function, say) is its message alone, and anything else keeps every frame.

Imports only the standard library and the pure ``contracts.errors``: the Python child
process loads it.
"""

from __future__ import annotations

import os
import traceback

from contracts.errors import StepError

_OURS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), package, "")
    for package in ("contracts", "conveyor", "engine", "workers")
)


def step_traceback(exc: BaseException) -> str:
    """``traceback.format_exception`` of ``exc`` without the engine's calling frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OURS):
        tb = tb.tb_next
    if tb is None and isinstance(exc, StepError):
        return f"{type(exc).__name__}: {exc}\n"
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
