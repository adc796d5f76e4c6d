"""Events: everything that happens to a run, as it is stored in the run log and sent on the wire.

Each event has a stable id built from (run, task, index, attempt, kind), so appending
the same event twice, or receiving a redelivered message, has no second effect.
``v`` is the schema version of the event; readers refuse versions they do not know.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

import msgspec

from contracts.vocabulary import FailureKind, RunStatus

EVENT_VERSION = 1


class Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    v: int = EVENT_VERSION
    run_id: str
    at: float
    """Seconds since the epoch, stamped by whoever produced the event."""

    # Events the coordinator decides (as opposed to facts reported from outside).
    decided: ClassVar[bool] = False
    kind: ClassVar[str] = ""
    """The event's type tag, as stored: set on each event class below."""

    @property
    def id(self) -> str:
        return f"{self.run_id}/{self.kind}"


class TaskEvent(Event, frozen=True, kw_only=True):
    task: str
    index: int = 0
    """Item index of a fan-out task; 0 for a plain task; -1 for the task as a whole."""
    attempt: int = 1

    @property
    def id(self) -> str:
        return f"{self.run_id}/{self.task}/{self.index}/{self.attempt}/{self.kind}"


class ParentTask(msgspec.Struct, frozen=True, kw_only=True):
    """The attempt of a workflow step that started a child run: where the child's end
    is reported, as that attempt's outcome."""

    run_id: str
    task: str
    index: int
    attempt: int
    shard: int
    """The coordinator shard the parent run is pinned to."""


class RunSubmitted(Event, tag="run_submitted", frozen=True, kw_only=True):
    workflow: dict[str, Any]
    """Snapshot of the workflow spec the run executes, as data."""
    params: dict[str, Any]
    trigger: str = "cli"
    """What started the run: ``cli``, ``api``, or ``<kind>:<trigger name>``."""
    idempotency_key: str | None = None
    workflow_version: int | None = None
    """The registered version of the workflow the run executes (runs started by triggers)."""
    shard: int | None = None
    """The coordinator shard the run is pinned to for its life (None: submitted before
    shard maps, and it goes where its run id hashes)."""
    parent: ParentTask | None = None
    """The workflow step this run is the child run of, if any."""


class TaskExpanded(TaskEvent, tag="task_expanded", frozen=True, kw_only=True):
    """A fan-out task's items were evaluated: ``count`` instances will run."""

    count: int
    decided: ClassVar[bool] = True


class TaskDispatched(TaskEvent, tag="task_dispatched", frozen=True, kw_only=True):
    """Recorded before the task message is published (outbox order)."""

    decided: ClassVar[bool] = True


class TaskStarted(TaskEvent, tag="task_started", frozen=True, kw_only=True):
    worker: str = ""


class ArtifactRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where an artifact is stored and how to check it: events carry these, never the bytes."""

    uri: str
    size: int
    sha256: str
    kind: Literal["file", "dir"] = "file"


class TaskSucceeded(TaskEvent, tag="task_succeeded", frozen=True, kw_only=True):
    result: Any = None
    outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    artifacts: dict[str, ArtifactRef] = msgspec.field(default_factory=dict)
    duration: float = 0.0


class TaskFailed(TaskEvent, tag="task_failed", frozen=True, kw_only=True):
    error: str
    reason: FailureKind = FailureKind.ERROR
    retryable: bool = True
    exit_code: int | None = None
    duration: float = 0.0
    stderr_tail: list[str] = msgspec.field(default_factory=list)
    """The last lines the attempt wrote to stderr: what a person reads first."""


class TaskFailedByEngine(TaskEvent, tag="task_errored", frozen=True, kw_only=True):
    """The engine failed a task itself, e.g. its ``when`` or ``items`` could not be evaluated."""

    error: str
    reason: FailureKind = FailureKind.EXPRESSION
    decided: ClassVar[bool] = True


class RetryScheduled(TaskEvent, tag="retry_scheduled", frozen=True, kw_only=True):
    """Attempt ``attempt`` will be dispatched at ``due``."""

    due: float
    decided: ClassVar[bool] = True


class TimerFired(TaskEvent, tag="timer_fired", frozen=True, kw_only=True):
    """The retry timer for ``attempt`` is due."""


class TaskSkipped(TaskEvent, tag="task_skipped", frozen=True, kw_only=True):
    reason: str
    decided: ClassVar[bool] = True


class SignalReceived(Event, tag="signal_received", frozen=True, kw_only=True):
    """A signal sent to the run (an approval, a webhook, a message): the wait steps
    waiting for ``name`` succeed with ``data`` as their result, now or when they start."""

    name: str
    data: Any = None
    key: str
    """Names this sending: the same key is the same signal, however often it arrives."""
    sender: str = ""

    @property
    def id(self) -> str:
        return f"{self.run_id}/{self.kind}/{self.name}/{self.key}"


class RunCancelRequested(Event, tag="run_cancel_requested", frozen=True, kw_only=True):
    reason: str = "cancelled by user"


class RunTimedOut(Event, tag="run_timed_out", frozen=True, kw_only=True):
    pass


class RunCompleted(Event, tag="run_completed", frozen=True, kw_only=True):
    state: RunStatus
    reason: str = ""
    round: int = 0
    """Which completion this is: a retried run completes once per round."""
    outputs: dict[str, Any] | None = None
    """What a run that succeeded gives back: its workflow's ``outputs``, rendered."""
    parent: ParentTask | None = None
    """The workflow step this run is the child run of: told of this end."""
    decided: ClassVar[bool] = True

    @property
    def id(self) -> str:
        return f"{self.run_id}/{self.kind}/{self.round}"


class RunRetryRequested(Event, tag="run_retry_requested", frozen=True, kw_only=True):
    """Re-run the failed, skipped and cancelled tasks of a finished run; keep the successes."""

    round: int
    """1 for the first retry of the run, 2 for the second, ..."""

    @property
    def id(self) -> str:
        return f"{self.run_id}/{self.kind}/{self.round}"


AnyEvent = (
    RunSubmitted
    | TaskExpanded
    | TaskDispatched
    | TaskStarted
    | TaskSucceeded
    | TaskFailed
    | TaskFailedByEngine
    | RetryScheduled
    | TimerFired
    | TaskSkipped
    | RunCancelRequested
    | SignalReceived
    | RunTimedOut
    | RunCompleted
    | RunRetryRequested
)

# A plain class attribute rather than a property reading ``__struct_config__``: ids are
# built several times for every event (the run log's and the coordinator's dedupe), and
# reading the tag cost more than building the rest of the id.
for _event_class in get_args(AnyEvent):
    _event_class.kind = str(_event_class.__struct_config__.tag)


class EventBatch(msgspec.Struct, tag="event_batch", frozen=True, kw_only=True):
    """Several events in one message (a worker's results that were ready together).

    Only a wire envelope: the run log stores the events themselves.
    """

    v: int = EVENT_VERSION
    events: list[AnyEvent]
