"""Building a run's state: snapshots kept in run logs before the current code still load
(instances as arrays of their fields, shorter where a field came later, state fields
missing), a fan-out's instances are made and counted once, and the count of their
statuses, times and retries the views of a run ask for are kept by the fold."""

from __future__ import annotations

import gc

import msgspec

from contracts.events import (
    Event,
    RetryScheduled,
    RunCancelRequested,
    RunCompleted,
    RunRetryRequested,
    RunSubmitted,
    TaskDispatched,
    TaskExpanded,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from contracts.vocabulary import FailureKind, RunStatus, TaskStatus
from engine.state import fold, replay, snapshot
from engine.state.model import Instance, Node
from tests.engine.tallies import kept, read_whole

# Written by the code before instances were decoded typed, then trimmed as a snapshot
# made before ``shard``, ``trigger``, ``signal_due`` and an instance's ``artifacts`` and
# ``stderr_tail`` existed would be.
OLD = (
    b'{"run_id":"r","params":{},"submitted_at":1.0,"now":4.0,"status":"running",'
    b'"finished_at":null,"reason":"","open_nodes":1,"cancel_reason":null,'
    b'"timed_out":false,"events_folded":5,"round":0,"deadline_base":1.0,"signals":{},'
    b'"v":1,"workflow":{"name":"w","tasks":[{"name":"a","script":{"source":"x"},'
    b'"items":[1,2],"retry":{"limit":0}}]},"evaluable":[],"dispatchable":["a"],'
    b'"retry_due":[],"nodes":{"a":{"deps_left":0,"status":"running","items":[1,2],'
    b'"next_index":1,"retry_ready":[],"inflight":0,"done":1,"failed":1,'
    b'"started_at":1.5,"finished_at":null,"error":"a[0]: boom","instances":'
    b'[["failed",1,null,null,"boom","timeout",3,4.0,null,0],'
    b'["pending",0,null,null,null,null,null,null,null,0,null,null]]}}}'
)


def test_a_snapshot_of_the_earlier_form_loads_with_typed_values() -> None:
    state = snapshot.load(OLD)
    assert state.status is RunStatus.RUNNING
    assert state.shard is None and state.signal_due == {} and state.trigger == ""
    failed, pending = state.nodes["a"].instances
    assert failed.status is TaskStatus.FAILED and failed.reason is FailureKind.TIMEOUT
    assert failed.error == "boom" and failed.started_at == 3.0
    assert failed.stderr_tail is None and failed.artifacts is None
    assert pending == Instance()
    assert state.nodes["a"].status is TaskStatus.RUNNING
    # Dumped again, it is in today's form, and loads to the same state.
    again = snapshot.dump(state)
    assert snapshot.dump(snapshot.load(again)) == again
    state.trigger = "webhook:push"
    assert snapshot.load(snapshot.dump(state)).trigger == "webhook:push"


def test_instances_are_left_out_of_the_garbage_collector_s_walks() -> None:
    """A million-item run's instances made every full collection walk a million objects
    (rebuilding such a run took four times as long). An instance holds only decoded data,
    which never refers back to it, so it cannot be part of a cycle."""
    assert not gc.is_tracked(Instance(result={"a": [1]}))


def _retried_fan_out() -> list[Event]:
    workflow = {
        "name": "w",
        "tasks": [{"name": "a", "items": [1, 2], "script": "x", "retry": {"limit": 0}}],
    }
    log: list[Event] = [
        RunSubmitted(run_id="r", at=1.0, workflow=workflow, params={}),
        TaskExpanded(run_id="r", at=1.5, task="a", index=-1, attempt=0, count=2),
    ]
    for index in (0, 1):
        log += [
            TaskDispatched(run_id="r", at=2.0, task="a", index=index),
            TaskStarted(run_id="r", at=3.0, task="a", index=index),
        ]
    log += [
        TaskSucceeded(run_id="r", at=4.0, task="a", index=0, result=1),
        TaskFailed(run_id="r", at=4.0, task="a", index=1, error="boom"),
        RunCompleted(run_id="r", at=5.0, state=RunStatus.FAILED, reason="failed tasks: a"),
        RunRetryRequested(run_id="r", at=6.0, round=1),
    ]
    return log


def test_a_reopened_fan_out_keeps_its_successes_only_where_its_items_still_fit() -> None:
    again = TaskExpanded(run_id="r", at=7.0, task="a", index=-1, attempt=0, count=2)
    kept = replay([*_retried_fan_out(), again]).nodes["a"]
    assert [i.status for i in kept.instances] == [TaskStatus.SUCCEEDED, TaskStatus.PENDING]
    assert kept.done == 1
    grown = replay([*_retried_fan_out(), msgspec.structs.replace(again, count=3)]).nodes["a"]
    assert {i.status for i in grown.instances} == {TaskStatus.PENDING}
    assert len(grown.instances) == 3 and grown.done == 0


def test_a_count_of_statuses_asked_at_any_point_stays_true_as_the_run_goes_on() -> None:
    """A run page asks for a fan-out's counts on every view; after the first, the fold
    keeps them, through each change of an instance: dispatch, start, success, failure,
    a retry due and waiting, the run's retry reopening it, and a cancel ending it."""
    log = _retried_fan_out()
    log += [
        TaskExpanded(run_id="r", at=7.0, task="a", index=-1, attempt=0, count=3),
        TaskDispatched(run_id="r", at=8.0, task="a", index=0, attempt=2),
        TaskDispatched(run_id="r", at=8.0, task="a", index=1, attempt=2),
        TaskStarted(run_id="r", at=8.5, task="a", index=1, attempt=2),
        TaskFailed(run_id="r", at=9.0, task="a", index=0, attempt=2, error="again"),
        RunCancelRequested(run_id="r", at=9.5, reason="enough"),
        RunCompleted(run_id="r", at=10.0, state=RunStatus.CANCELLED, reason="enough"),
    ]
    for cut in range(2, len(log)):
        state = replay(log[:cut])
        node = state.nodes["a"]
        node.tally()
        for event in log[cut:]:
            fold(state, event)
            assert kept(node) == read_whole(node.instances)
    assert node.status_counts() == {TaskStatus.FAILED: 1, TaskStatus.CANCELLED: 2}


def test_retries_due_and_waiting_are_counted_as_they_change() -> None:
    workflow = {"name": "w", "tasks": [{"name": "a", "items": [1], "script": "x"}]}
    workflow["tasks"][0]["retry"] = {"limit": 2}
    state = replay(
        [
            RunSubmitted(run_id="r", at=1.0, workflow=workflow, params={}),
            TaskExpanded(run_id="r", at=1.5, task="a", index=-1, attempt=0, count=1),
            TaskDispatched(run_id="r", at=2.0, task="a", index=0),
        ]
    )
    node = state.nodes["a"]
    assert node.status_counts() == {TaskStatus.DISPATCHED: 1}
    fold(state, TaskFailed(run_id="r", at=3.0, task="a", index=0, error="x", retryable=True))
    assert node.status_counts() == {TaskStatus.RETRY_DUE: 1}
    fold(state, RetryScheduled(run_id="r", at=3.0, task="a", index=0, attempt=2, due=4.0))
    assert node.status_counts() == {TaskStatus.RETRY_WAIT: 1}


def test_a_fan_out_s_times_kept_by_the_fold_follow_starts_and_finishes_moving_back() -> None:
    """The timeline reads a fan-out's first start and last finish once, then the fold
    keeps them. A retried instance's start and finish replace its earlier ones, which
    may have been the earliest start or (a worker's clock behind) the latest finish."""
    workflow = {"name": "w", "tasks": [{"name": "a", "items": [1, 2], "script": "x"}]}
    workflow["tasks"][0]["retry"] = {"limit": 2}
    state = replay(
        [
            RunSubmitted(run_id="r", at=1.0, workflow=workflow, params={}),
            TaskExpanded(run_id="r", at=1.0, task="a", index=-1, attempt=0, count=2),
            TaskDispatched(run_id="r", at=1.0, task="a", index=0),
            TaskDispatched(run_id="r", at=1.0, task="a", index=1),
        ]
    )
    node = state.nodes["a"]
    assert _times(node) == (None, None, 0)
    fold(state, TaskStarted(run_id="r", at=2.0, task="a", index=0))
    fold(state, TaskStarted(run_id="r", at=3.0, task="a", index=1))
    fold(state, TaskSucceeded(run_id="r", at=4.0, task="a", index=1))
    fold(state, TaskFailed(run_id="r", at=9.0, task="a", index=0, error="x", retryable=True))
    assert _times(node) == (2.0, 9.0, 2)
    fold(state, RetryScheduled(run_id="r", at=9.0, task="a", index=0, attempt=2, due=9.0))
    fold(state, TaskDispatched(run_id="r", at=9.0, task="a", index=0, attempt=2))
    fold(state, TaskStarted(run_id="r", at=5.0, task="a", index=0, attempt=2))
    assert _times(node) == (3.0, 9.0, 2)
    assert node.tally().retries == 1
    fold(state, TaskSucceeded(run_id="r", at=6.0, task="a", index=0, attempt=2))
    assert _times(node) == (3.0, 6.0, 2)


def test_a_grown_fan_out_of_a_retried_run_counts_the_retries_its_kept_instances_had() -> None:
    workflow = {"name": "w", "tasks": [{"name": "a", "items": [1], "script": "x"}]}
    workflow["tasks"][0]["retry"] = {"limit": 1}
    failed = TaskFailed(run_id="r", at=3.0, task="a", index=0, error="x", retryable=True)
    log: list[Event] = [
        RunSubmitted(run_id="r", at=1.0, workflow=workflow, params={}),
        TaskExpanded(run_id="r", at=1.0, task="a", index=-1, attempt=0, count=1),
        TaskDispatched(run_id="r", at=2.0, task="a", index=0),
        failed,
        RetryScheduled(run_id="r", at=3.0, task="a", index=0, attempt=2, due=4.0),
        TaskDispatched(run_id="r", at=4.0, task="a", index=0, attempt=2),
        msgspec.structs.replace(failed, at=5.0, attempt=2),
        RunCompleted(run_id="r", at=6.0, state=RunStatus.FAILED, reason="failed tasks: a"),
        RunRetryRequested(run_id="r", at=7.0, round=1),
        TaskExpanded(run_id="r", at=8.0, task="a", index=-1, attempt=0, count=3),
    ]
    node = replay(log).nodes["a"]
    assert node.tallied is not None  # made with the instances, not read from them
    assert node.tally().retries == 1


def _times(node: Node) -> tuple[float | None, float | None, int]:
    _counts, first, last, finished, _retries = kept(node)
    return first, last, finished
