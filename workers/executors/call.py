"""One step on its way through the executor chain, and the shape of a middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from contracts.messages import TaskReady
from workers.executors.base import LogEmitter, StepOutcome

_log = structlog.get_logger("conveyor.worker")


@dataclass(frozen=True, slots=True)
class StepCall:
    """One attempt of a step, as it goes through the chain."""

    task: TaskReady
    emit: LogEmitter
    workdir: Path
    log: Any = _log
    """The worker's logger, bound once (resolving a lazy logger per step costs more than
    a small step); its context already names the run, task, item, attempt and trace."""


Proceed = Callable[[StepCall], Awaitable[StepOutcome]]


class Middleware(Protocol):
    def __call__(self, call: StepCall, proceed: Proceed) -> Awaitable[StepOutcome]: ...
