"""A deterministic driver for the pure core: the coordinator's loop without I/O.

Appends (deduplicating by event id, like every run log), folds, and decides to a
fixpoint, recording the log so tests can replay it.
"""

from __future__ import annotations

import textwrap
from typing import Any

from contracts.events import (
    Event,
    RunCancelRequested,
    RunSubmitted,
    RunTimedOut,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    TimerFired,
)
from contracts.spec import Workflow
from contracts.validation import parse_workflow, resolve_params
from engine.state import fold, new_state, settle
from engine.state.model import RunState


class Sim:
    def __init__(
        self, workflow: Workflow | str, params: dict[str, Any] | None = None, run_id: str = "run1"
    ) -> None:
        if isinstance(workflow, str):
            workflow = parse_workflow(textwrap.dedent(workflow))
        self.workflow = workflow
        self.now = 1000.0
        submitted = RunSubmitted(
            run_id=run_id,
            at=self.now,
            workflow=workflow.model_dump(mode="json", exclude_unset=True),
            params=resolve_params(workflow, params or {}),
        )
        self.log: list[Event] = [submitted]
        self.ids = {submitted.id}
        self.state: RunState = new_state(submitted)
        self.last_decisions: list[Event] = []
        self._advance()

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds

    def send(self, event: Event) -> list[Event]:
        """Deliver an external event; returns the decisions it led to."""
        if event.id in self.ids:
            self.last_decisions = []
            return []
        self.ids.add(event.id)
        self.log.append(event)
        fold(self.state, event)
        return self._advance()

    def send_together(self, *events: Event) -> list[Event]:
        """Deliver external events that arrived together: the coordinator folds a batch
        of one run's events, then decides once."""
        for event in events:
            self.ids.add(event.id)
            self.log.append(event)
            fold(self.state, event)
        return self._advance()

    def _advance(self) -> list[Event]:
        made = settle(self.state)
        for decision in made:
            assert decision.id not in self.ids, f"decided twice: {decision.id}"
            self.ids.add(decision.id)
            self.log.append(decision)
        self.last_decisions = made
        return made

    # Shorthands for outside facts.
    def started(self, task: str, index: int = 0, attempt: int = 1) -> list[Event]:
        return self.send(
            TaskStarted(run_id=self.run_id, at=self.now, task=task, index=index, attempt=attempt)
        )

    def ok(
        self, task: str, index: int = 0, attempt: int = 1, result: Any = None, **outputs: Any
    ) -> list[Event]:
        return self.send(
            TaskSucceeded(
                run_id=self.run_id,
                at=self.now,
                task=task,
                index=index,
                attempt=attempt,
                result=result,
                outputs=outputs,
            )
        )

    def fail(
        self,
        task: str,
        index: int = 0,
        attempt: int = 1,
        reason: str = "error",
        retryable: bool = True,
    ) -> list[Event]:
        return self.send(self.failure(task, index, attempt, reason, retryable))

    def failure(
        self,
        task: str,
        index: int = 0,
        attempt: int = 1,
        reason: str = "error",
        retryable: bool = True,
    ) -> TaskFailed:
        """The failure of an attempt, now (to send, alone or with others)."""
        return TaskFailed(
            run_id=self.run_id,
            at=self.now,
            task=task,
            index=index,
            attempt=attempt,
            error="boom",
            reason=reason,  # type: ignore[arg-type]
            retryable=retryable,
        )

    def fire(self, task: str, index: int = 0, attempt: int = 2) -> list[Event]:
        return self.send(
            TimerFired(run_id=self.run_id, at=self.now, task=task, index=index, attempt=attempt)
        )

    def cancel(self) -> list[Event]:
        return self.send(RunCancelRequested(run_id=self.run_id, at=self.now))

    def time_out(self) -> list[Event]:
        return self.send(RunTimedOut(run_id=self.run_id, at=self.now))

    def dispatched(self) -> list[tuple[str, int, int]]:
        """(task, index, attempt) of every dispatch in the last decisions."""
        return [
            (d.task, d.index, d.attempt)
            for d in self.last_decisions
            if isinstance(d, TaskDispatched)
        ]

    def statuses(self) -> dict[str, str]:
        return {name: node.status for name, node in self.state.nodes.items()}
