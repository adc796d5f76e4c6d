"""What an attempt reports: its outcome as an event, or why it was interrupted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.events import Event, TaskFailed, TaskSucceeded
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
        return StepOutcome(
            ok=False,
            error=self.message if handed_back else f"cancelled: {self.message}",
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
