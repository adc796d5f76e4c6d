"""Run state: what a run's event log folds into."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter, is_not
from typing import Any

import msgspec

from contracts.events import ParentTask
from contracts.spec import Task, Workflow
from contracts.vocabulary import FailureKind, RunStatus, TaskStatus
from engine.state.items import StreamedItems

# An instance is one execution slot of a task: the task itself, or one item of a
# fan-out. Its attempts are numbered from 1.


class Instance(msgspec.Struct, array_like=True, gc=False):
    """A msgspec struct, kept in a snapshot as the array of its fields: a snapshot of a
    million-item fan-out is decoded into instances in C, not built one call at a time.
    The garbage collector does not walk instances (``gc=False``): an instance holds
    only decoded data, which never refers back to it, so it is never part of a cycle."""

    status: TaskStatus = TaskStatus.PENDING
    attempt: int = 0
    result: Any = None
    outputs: dict[str, Any] | None = None
    error: str | None = None
    reason: FailureKind | None = None
    started_at: float | None = None
    finished_at: float | None = None
    due: float | None = None
    lost: int = 0
    """Attempts lost with their worker; they do not count against the retry limit."""
    artifacts: dict[str, Any] | None = None
    stderr_tail: list[str] | None = None
    """Of a failed attempt: the last lines it wrote to stderr."""


_STATUS = attrgetter("status")
_ATTEMPT = attrgetter("attempt")
_STARTED_AT = attrgetter("started_at")
_FINISHED_AT = attrgetter("finished_at")
_KNOWN = partial(is_not, None)


@dataclass(slots=True)
class Tally:
    """A node's instances taken together, as the views of a run show them: counts per
    status (a DAG box, the task list, a filter of items), the first start and last
    finish (a timeline's bar), the retries (``conveyor run``'s progress table)."""

    by_status: dict[TaskStatus, int]
    """How many instances are in each status (a status once held may count 0)."""
    first_start: float | None
    """The earliest ``started_at`` of the instances."""
    last_finish: float | None
    """The latest ``finished_at`` of the instances."""
    finished: int
    """How many instances have a ``finished_at``."""
    retries: int
    """Attempts after each instance's first."""

    @classmethod
    def of(cls, instances: list[Instance]) -> Tally:
        """Read from the instances, in C: its passes over a million instances take about
        0.4 s on a 2-core machine."""
        starts = list(filter(_KNOWN, map(_STARTED_AT, instances)))
        ends = list(filter(_KNOWN, map(_FINISHED_AT, instances)))
        return cls(
            by_status=Counter(map(_STATUS, instances)),
            first_start=min(starts, default=None),
            last_finish=max(ends, default=None),
            finished=len(ends),
            retries=retries_of(instances),
        )


def retries_of(instances: list[Instance]) -> int:
    """The attempts after each instance's first (one never dispatched has attempt 0)."""
    attempts: list[int] = list(map(_ATTEMPT, instances))
    return sum(attempts) - len(attempts) + attempts.count(0)


MAX_LOST_ATTEMPTS = 5
DISPATCH_WINDOW = 4096
"""Most instances of a task without ``parallelism`` in flight at once."""


@dataclass(slots=True)
class Node:
    """A task of the run and the state of all its instances."""

    spec: Task
    deps_left: int
    ancestors: frozenset[str]
    status: TaskStatus = TaskStatus.PENDING
    items: list[Any] | StreamedItems | None = None
    instances: list[Instance] = field(default_factory=list)
    next_index: int = 0
    """Instances below this index have been dispatched at least once."""
    retry_ready: list[int] = field(default_factory=list)
    """Instances whose retry timer fired, waiting for a dispatch slot."""
    inflight: int = 0
    done: int = 0
    failed: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    context: dict[str, Any] | None = None
    """Expression context of upstream tasks; built once, upstream is final by then."""
    tallied: Tally | None = field(default=None, compare=False)
    """The instances taken together: made with fresh instances (all pending), else read
    when ``tally`` is first asked (after a snapshot's load, say); the fold keeps it up
    to date from then on. ``None``: not read yet."""

    def tally(self) -> Tally:
        """The instances taken together. Read once and then kept by the fold: a page of
        a million-item run asks on every view, and a read is a pass over them all."""
        if self.tallied is None:
            self.tallied = Tally.of(self.instances)
        return self.tallied

    def status_counts(self) -> dict[TaskStatus, int]:
        """How many instances are in each status (none with a count of 0)."""
        return {status: count for status, count in self.tally().by_status.items() if count}

    @property
    def capacity(self) -> int:
        cap = self.spec.parallelism
        if cap is not None:
            return cap - self.inflight
        # Without a limit a fan-out is dispatched in windows: at most DISPATCH_WINDOW in
        # flight, topped up once half of it has drained, so 100,000 items neither flood
        # the broker and the log at once nor trickle out one at a time.
        if self.inflight > DISPATCH_WINDOW // 2:
            return 0
        return DISPATCH_WINDOW - self.inflight

    @property
    def has_pending(self) -> bool:
        return bool(self.retry_ready) or self.next_index < len(self.instances)

    def outputs(self) -> dict[str, Any]:
        """What downstream tasks see as ``tasks.<name>.outputs``."""
        names = list(self.spec.outputs)
        if self.spec.fans_out:
            out: dict[str, Any] = {"result": [i.result for i in self.instances]}
            for name in names:
                out[name] = [(i.outputs or {}).get(name) for i in self.instances]
            return out
        if not self.instances:
            return {"result": None, **dict.fromkeys(names)}
        inst = self.instances[0]
        return {"result": inst.result, **{n: (inst.outputs or {}).get(n) for n in names}}

    def artifacts(self) -> dict[str, Any]:
        """What downstream tasks see as ``tasks.<name>.artifacts`` (a list per fan-out)."""
        names = list(self.spec.artifacts.out)
        if self.spec.fans_out:
            return {n: [(i.artifacts or {}).get(n) for i in self.instances] for n in names}
        inst = self.instances[0] if self.instances else None
        return {n: ((inst.artifacts or {}).get(n) if inst else None) for n in names}

    def attempts(self) -> int | list[int]:
        if self.spec.fans_out:
            return [i.attempt for i in self.instances]
        return self.instances[0].attempt if self.instances else 0


@dataclass(slots=True)
class RunState:
    run_id: str
    workflow: Workflow
    params: dict[str, Any]
    submitted_at: float
    now: float
    downstream: dict[str, list[str]]
    nodes: dict[str, Node]
    status: RunStatus = RunStatus.RUNNING
    finished_at: float | None = None
    reason: str = ""
    open_nodes: int = 0
    # Work queues of the decision step. Dicts are ordered sets: decisions come out in a
    # stable order, which replay relies on.
    evaluable: dict[str, None] = field(default_factory=dict)
    dispatchable: dict[str, None] = field(default_factory=dict)
    retry_due: dict[tuple[str, int], None] = field(default_factory=dict)
    cancel_reason: str | None = None
    timed_out: bool = False
    events_folded: int = 0
    round: int = 0
    """How many times the run was retried (``conveyor retry``)."""
    deadline_base: float = 0.0
    """When the run's timeout started counting: submission, or the latest retry."""
    signals: dict[str, Any] = field(default_factory=dict)
    """Signals received, by name: the data of the latest."""
    signal_due: dict[tuple[str, int], None] = field(default_factory=dict)
    """Waiting instances whose signal has come: to succeed."""
    shard: int | None = None
    """The coordinator shard the run is pinned to (``RunSubmitted.shard``)."""
    trigger: str = ""
    """What started the run (``RunSubmitted.trigger``: cli, api, webhook:push, ...);
    empty in a state from a snapshot made before it was kept."""
    outputs: dict[str, Any] | None = None
    """What the run gave back when it succeeded (``RunCompleted.outputs``)."""
    parent: ParentTask | None = None
    """The workflow step this run is the child run of (``RunSubmitted.parent``)."""

    @property
    def finished(self) -> bool:
        return self.status != RunStatus.RUNNING
