"""What an attempt reports: its start, its outcome as an event, or why it was interrupted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.events import Event, TaskFailed, TaskStarted, TaskSucceeded
from contracts.messages import TaskReady
from contracts.vocabulary import FailureKind
from workers.executors import StepOutcome


@dataclass(frozen=True, slots=True)
class Interruption:
    """Why an attempt's handler was cancelled from outside the step."""

    kind: FailureKind
    message: str

    def outcome(self) -> StepOutcome:
        # A step handed back did not fail: it runs again at once, elsewhere.
        handed_back = self.kind == FailureKind.LOST
        said = handed_back or self.message.startswith("cancelled")  # not "cancelled: cancelled …"
        return StepOutcome(
            ok=False,
            error=self.message if said else f"cancelled: {self.message}",
            reason=self.kind,
            retryable=handed_back,
        )


HANDED_BACK = Interruption(FailureKind.LOST, "handed back: the worker stopped")


def outcome_event(
    message: TaskReady, outcome: StepOutcome, at: float, duration: float, stderr_tail: list[str]
) -> Event:
    """The event that reports how an attempt ended."""
    common: dict[str, Any] = {
        "run_id": message.run_id,
        "at": at,
        "task": message.task,
        "index": message.index,
        "attempt": message.attempt,
        "duration": duration,
    }
    if outcome.ok:
        return TaskSucceeded(
            **common, result=outcome.result, outputs=outcome.outputs, artifacts=outcome.artifacts
        )
    return TaskFailed(
        **common,
        error=outcome.error,
        reason=outcome.reason,
        retryable=outcome.retryable,
        exit_code=outcome.exit_code,
        stderr_tail=stderr_tail,
    )


def started_event(message: TaskReady, at: float, worker: str) -> TaskStarted:
    return TaskStarted(
        run_id=message.run_id,
        at=at,
        task=message.task,
        index=message.index,
        attempt=message.attempt,
        worker=worker,
    )


def unsent_event(message: TaskReady, at: float, exc: BaseException) -> TaskFailed:
    """Reports an outcome that could not be sent (it is not retried: it may have run)."""
    return TaskFailed(
        run_id=message.run_id,
        at=at,
        task=message.task,
        index=message.index,
        attempt=message.attempt,
        error=f"its outcome could not be sent: {type(exc).__name__}: {exc}",
        retryable=False,
    )
