"""Messages that are not events: work sent to workers, and control broadcasts."""

from __future__ import annotations

from typing import Any

import msgspec

MESSAGE_VERSION = 1


class StepSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A step with every template already rendered: what a worker needs, nothing more."""

    kind: str
    """``script``, ``command`` or ``python``."""
    source: str | None = None
    interpreter: str | None = None
    argv: list[str] | None = None
    target: str | None = None
    """``module:function`` of a python step."""
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    workdir: str | None = None
    outputs: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: float | None = None


class TaskReady(msgspec.Struct, tag="task_ready", frozen=True, kw_only=True):
    v: int = MESSAGE_VERSION
    run_id: str
    task: str
    index: int = 0
    attempt: int = 1
    step: StepSpec
    item: Any = None

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.run_id, self.task, self.index, self.attempt)


class CancelTasks(msgspec.Struct, tag="cancel_tasks", frozen=True, kw_only=True):
    """Broadcast to workers: stop every running attempt of ``run_id`` (optionally one task)."""

    v: int = MESSAGE_VERSION
    run_id: str
    task: str | None = None
    reason: str = "cancelled"
