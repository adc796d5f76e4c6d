"""Messages that are not events: work sent to workers, and control broadcasts."""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.vocabulary import AttemptRef

MESSAGE_VERSION = 1


class ContainerSpec(msgspec.Struct, frozen=True, kw_only=True):
    image: str
    command: list[str] | None = None
    args: list[str] = msgspec.field(default_factory=list)
    script: str | None = None
    user: str | None = None
    network: str | None = None
    cpus: float | None = None
    memory: str | None = None
    pull: str = "if-not-present"


class CacheSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A step's cache policy, rendered (``contracts.spec.CachePolicy``)."""

    key: str | None = None
    key_fn: str | None = None
    expire: float | None = None
    refresh: bool = False


class StepSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A step with every template already rendered: what a worker needs, nothing more."""

    kind: str
    """``script``, ``command``, ``python``, ``container``, ``http`` or ``amqp``."""
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
    container: ContainerSpec | None = None
    artifacts_out: dict[str, str] = msgspec.field(default_factory=dict)
    """Output artifacts: name -> path (relative to the working directory)."""
    artifacts_in: dict[str, Any] = msgspec.field(default_factory=dict)
    """Input artifacts: path -> an artifact reference, a list of them, or a URL."""
    call: dict[str, Any] | None = None
    """An ``http`` or ``amqp`` step's request, rendered."""
    cache: CacheSpec | None = None


class TaskReady(msgspec.Struct, tag="task_ready", frozen=True, kw_only=True):
    v: int = MESSAGE_VERSION
    run_id: str
    task: str
    index: int = 0
    attempt: int = 1
    step: StepSpec
    item: Any = None
    reply_to: str = ""
    """Queue for this attempt's events (its run's coordinator shard)."""

    @property
    def ref(self) -> AttemptRef:
        return AttemptRef(self.run_id, self.task, self.index, self.attempt)


class TaskBatch(msgspec.Struct, tag="task_batch", frozen=True, kw_only=True):
    """Several task messages in one: sent when many tasks of a pool are ready at once.

    A worker accepts the whole batch (one ``TaskStarted`` message for all of it) and runs
    its tasks as its slots free up.
    """

    v: int = MESSAGE_VERSION
    tasks: list[TaskReady]


class CancelTasks(msgspec.Struct, tag="cancel_tasks", frozen=True, kw_only=True):
    """Broadcast to workers: stop every running attempt of ``run_id`` (optionally one task)."""

    v: int = MESSAGE_VERSION
    run_id: str
    task: str | None = None
    reason: str = "cancelled"


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True, kw_only=True):
    """A worker is alive and still running these attempts. Not logged: it renews leases."""

    v: int = MESSAGE_VERSION
    worker: str
    at: float
    attempts: list[AttemptRef]


class ShardWake(msgspec.Struct, tag="shard_wake", frozen=True, kw_only=True):
    """Sent to every shard queue now and then: whoever consumes it checks that it holds
    every unfinished run of the shard (a standby that just took over picks them up)."""

    v: int = MESSAGE_VERSION
    shard: int
    at: float


class ResumeRun(msgspec.Struct, tag="resume_run", frozen=True, kw_only=True):
    """Take up this unfinished run from its log (its coordinator process died).

    Not logged: it changes nothing a log records, it only makes a coordinator that
    does not hold the run rebuild it and carry on.
    """

    v: int = MESSAGE_VERSION
    run_id: str
    at: float
    steps_lost: bool = False
    """The steps it was running died with it (a local run's process): run them again."""
