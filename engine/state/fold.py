"""The fold: ``state + event -> state``. Records facts; decides nothing.

Folding mutates the state in place (a run with 100,000 items cannot afford copies)
but reads nothing besides the state and the event: no I/O, no clock. Events that no
longer apply (a result from a superseded attempt, anything after the run finished)
are kept in the log by the caller and change nothing here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from contracts.events import (
    Event,
    RetryScheduled,
    RunCancelRequested,
    RunCompleted,
    RunRetryRequested,
    RunSubmitted,
    RunTimedOut,
    SignalReceived,
    TaskDispatched,
    TaskExpanded,
    TaskFailed,
    TaskFailedByEngine,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
    TimerFired,
)
from contracts.graph import ancestors, downstream
from contracts.submitted import workflow_of
from contracts.vocabulary import IN_FLIGHT, TERMINAL, FailureKind, RunStatus, TaskStatus
from engine.state import model as m
from engine.state.context import evaluate_items
from engine.state.model import Instance, Node, RunState, Tally


def new_state(event: RunSubmitted) -> RunState:
    workflow = workflow_of(event.workflow)
    deps = {t.name: list(t.depends) for t in workflow.tasks}
    nodes = {
        t.name: Node(spec=t, deps_left=len(t.depends), ancestors=frozenset(ancestors(deps, t.name)))
        for t in workflow.tasks
    }
    state = RunState(
        run_id=event.run_id,
        workflow=workflow,
        params=dict(event.params),
        submitted_at=event.at,
        now=event.at,
        downstream=downstream(deps),
        nodes=nodes,
        open_nodes=len(nodes),
        deadline_base=event.at,
        shard=event.shard,
        trigger=event.trigger,
        parent=event.parent,
    )
    for name, node in nodes.items():
        if node.deps_left == 0:
            state.evaluable[name] = None
    state.events_folded = 1
    return state


def fold(state: RunState, event: Event) -> RunState:
    state.now = max(state.now, event.at)
    state.events_folded += 1
    if isinstance(event, RunRetryRequested):
        _on_retry_run(state, event)
        return state
    if state.finished:
        return state
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(state, event)
    return state


def _finish_node(state: RunState, node: Node, status: TaskStatus, at: float) -> None:
    node.status = status
    node.finished_at = at
    state.open_nodes -= 1
    state.dispatchable.pop(node.spec.name, None)
    # Only the edges of the finished task are re-evaluated.
    for child_name in state.downstream[node.spec.name]:
        child = state.nodes[child_name]
        child.deps_left -= 1
        if child.deps_left == 0 and child.status == TaskStatus.PENDING:
            state.evaluable[child_name] = None


def _instance_finished(state: RunState, node: Node, at: float) -> None:
    node.done += 1
    if node.done == len(node.instances):
        _finish_node(state, node, TaskStatus.FAILED if node.failed else TaskStatus.SUCCEEDED, at)
    elif node.has_pending:
        state.dispatchable[node.spec.name] = None


def _move(node: Node, inst: Instance, status: TaskStatus) -> None:
    """Change an instance's status, and the node's tally if it keeps one."""
    tally = node.tallied
    if tally is not None:
        counts = tally.by_status
        counts[inst.status] -= 1
        counts[status] = counts.get(status, 0) + 1
    inst.status = status


def _started(node: Node, inst: Instance, at: float) -> None:
    """Set an instance's start, and the node's tally if it keeps one."""
    tally, before = node.tallied, inst.started_at
    if tally is not None:
        if before is not None and before == tally.first_start and at > before:
            node.tallied = None  # the earliest start moves on: read again when asked
        elif tally.first_start is None or at < tally.first_start:
            tally.first_start = at
    inst.started_at = at


def _finished(node: Node, inst: Instance, at: float) -> None:
    """Set an instance's finish, and the node's tally if it keeps one."""
    tally, before = node.tallied, inst.finished_at
    if tally is not None:
        if before is not None and before == tally.last_finish and at < before:
            node.tallied = None  # the latest finish moves back: read again when asked
        else:
            if before is None:
                tally.finished += 1
            if tally.last_finish is None or at > tally.last_finish:
                tally.last_finish = at
    inst.finished_at = at


def _slot(state: RunState, task: str, index: int) -> tuple[Node, Instance] | None:
    """The node and instance an event names, if both exist."""
    node = state.nodes.get(task)
    if node is None or not 0 <= index < len(node.instances):
        return None
    return node, node.instances[index]


def _current(state: RunState, task: str, index: int, attempt: int) -> tuple[Node, Instance] | None:
    """The node and instance an event is about, if the event is for the live attempt."""
    found = _slot(state, task, index)
    if found is None or found[1].attempt != attempt:
        return None  # fencing: a superseded (or future) attempt changes nothing
    return found


def _on_expanded(state: RunState, event: TaskExpanded) -> None:
    node = state.nodes.get(event.task)
    if node is None or node.status != TaskStatus.PENDING:
        return
    state.evaluable.pop(event.task, None)
    node.items = evaluate_items(state, node) if node.spec.fans_out else None
    previous = node.instances  # non-empty when a retried run reopens the task
    if len(previous) == event.count:  # kept as they are (the reopen dropped their tally)
        node.done = sum(1 for inst in previous if inst.status == TaskStatus.SUCCEEDED)
    else:
        # All fresh: pending, never started. A new fan-out's million instances are not
        # read again to tally them, neither here nor on the run page.
        node.instances = [
            Instance(attempt=previous[i].attempt, lost=previous[i].lost)
            for i in range(min(len(previous), event.count))
        ]
        retries = m.retries_of(node.instances)
        node.instances += [Instance() for _ in range(event.count - len(node.instances))]
        node.done = 0
        node.tallied = Tally({TaskStatus.PENDING: event.count}, None, None, 0, retries)
    node.status = TaskStatus.RUNNING
    node.started_at = event.at
    if node.done == event.count:
        _finish_node(state, node, TaskStatus.SUCCEEDED, event.at)
    else:
        state.dispatchable[event.task] = None


def _on_dispatched(state: RunState, event: TaskDispatched) -> None:
    found = _slot(state, event.task, event.index)
    if found is None:
        return
    node, inst = found
    if event.attempt != inst.attempt + 1 or inst.status not in (
        TaskStatus.PENDING,
        TaskStatus.RETRY_WAIT,
    ):
        return
    if inst.status == TaskStatus.PENDING:
        node.next_index = max(node.next_index, event.index + 1)
    elif event.index in node.retry_ready:
        node.retry_ready.remove(event.index)
    _move(node, inst, TaskStatus.DISPATCHED)
    inst.attempt = event.attempt
    if event.attempt > 1 and node.tallied is not None:
        node.tallied.retries += 1
    inst.due = None
    node.inflight += 1
    if node.capacity <= 0 or not node.has_pending:
        state.dispatchable.pop(event.task, None)
    signal = node.spec.signal
    if signal is not None:
        # A wait step runs nowhere: it is waiting from now on (for a signal that may
        # already have come).
        _move(node, inst, TaskStatus.RUNNING)
        _started(node, inst, event.at)
        if signal in state.signals:
            state.signal_due[(event.task, event.index)] = None


def _on_signal(state: RunState, event: SignalReceived) -> None:
    state.signals[event.name] = event.data
    for node in state.nodes.values():
        if node.spec.signal != event.name:
            continue
        for index, inst in enumerate(node.instances):
            if inst.status == TaskStatus.RUNNING:
                state.signal_due[(node.spec.name, index)] = None


def _on_started(state: RunState, event: TaskStarted) -> None:
    found = _current(state, event.task, event.index, event.attempt)
    if found is None:
        return
    node, inst = found
    if inst.status == TaskStatus.DISPATCHED:
        _move(node, inst, TaskStatus.RUNNING)
        _started(node, inst, event.at)


def _on_succeeded(state: RunState, event: TaskSucceeded) -> None:
    found = _current(state, event.task, event.index, event.attempt)
    if found is None or found[1].status not in IN_FLIGHT:
        return
    node, inst = found
    if node.spec.wait is not None:
        state.signal_due.pop((event.task, event.index), None)
    _move(node, inst, TaskStatus.SUCCEEDED)
    inst.result = event.result
    inst.outputs = event.outputs or None
    inst.artifacts = msgspec.to_builtins(event.artifacts) if event.artifacts else None
    inst.error = None
    _finished(node, inst, event.at)
    node.inflight -= 1
    _instance_finished(state, node, event.at)


def _on_failed(state: RunState, event: TaskFailed) -> None:
    found = _current(state, event.task, event.index, event.attempt)
    if found is None or found[1].status not in IN_FLIGHT:
        return
    node, inst = found
    if node.spec.wait is not None:
        # No longer waiting: a signal already here releases its next attempt instead.
        state.signal_due.pop((event.task, event.index), None)
    node.inflight -= 1
    inst.error = event.error
    inst.reason = event.reason
    inst.stderr_tail = event.stderr_tail or None
    _finished(node, inst, event.at)
    policy = node.spec.retry
    if event.reason == FailureKind.LOST and inst.lost < m.MAX_LOST_ATTEMPTS:
        inst.lost += 1
        retry = True
    else:
        retry = (
            event.retryable
            and event.reason in policy.on
            and event.attempt - inst.lost <= policy.limit
        )
    if retry:
        _move(node, inst, TaskStatus.RETRY_DUE)
        state.retry_due[(event.task, event.index)] = None
        if node.has_pending and node.capacity > 0:
            state.dispatchable[event.task] = None
        return
    _move(node, inst, TaskStatus.FAILED)
    node.failed += 1
    if node.error is None:
        where = f"[{event.index}]" if node.spec.fans_out else ""
        node.error = f"{event.task}{where}: {event.error}"
    _instance_finished(state, node, event.at)


def _on_engine_failure(state: RunState, event: TaskFailedByEngine) -> None:
    node = state.nodes.get(event.task)
    if node is None or node.status != TaskStatus.PENDING:
        return
    state.evaluable.pop(event.task, None)
    node.error = f"{event.task}: {event.error}"
    _finish_node(state, node, TaskStatus.FAILED, event.at)


def _on_retry_scheduled(state: RunState, event: RetryScheduled) -> None:
    found = _slot(state, event.task, event.index)
    if found is None:
        return
    node, inst = found
    if inst.status != TaskStatus.RETRY_DUE or inst.attempt + 1 != event.attempt:
        return
    state.retry_due.pop((event.task, event.index), None)
    _move(node, inst, TaskStatus.RETRY_WAIT)
    inst.due = event.due


def _on_timer(state: RunState, event: TimerFired) -> None:
    found = _slot(state, event.task, event.index)
    if found is None:
        return
    node, inst = found
    if inst.status != TaskStatus.RETRY_WAIT or inst.attempt + 1 != event.attempt:
        return
    if event.index not in node.retry_ready:
        node.retry_ready.append(event.index)
        if node.capacity > 0:
            state.dispatchable[event.task] = None


def _on_skipped(state: RunState, event: TaskSkipped) -> None:
    node = state.nodes.get(event.task)
    if node is None or node.status != TaskStatus.PENDING:
        return
    state.evaluable.pop(event.task, None)
    node.error = event.reason
    _finish_node(state, node, TaskStatus.SKIPPED, event.at)


def _on_cancel(state: RunState, event: RunCancelRequested) -> None:
    if state.cancel_reason is None:
        state.cancel_reason = event.reason


def _on_timed_out(state: RunState, event: RunTimedOut) -> None:
    state.timed_out = True


def _on_retry_run(state: RunState, event: RunRetryRequested) -> None:
    """Reopen a finished run: tasks that did not succeed go back to pending."""
    if not state.finished or state.status == RunStatus.SUCCEEDED or event.round != state.round + 1:
        return
    state.round = event.round
    state.status = RunStatus.RUNNING
    state.reason = ""
    state.finished_at = None
    state.cancel_reason = None
    state.timed_out = False
    state.deadline_base = event.at
    reopened = [n for n in state.nodes.values() if n.status != TaskStatus.SUCCEEDED]
    for node in reopened:
        # Instances keep their attempt numbers, so new attempts get new event ids.
        kept = [
            Instance(attempt=i.attempt, lost=i.lost) if i.status != TaskStatus.SUCCEEDED else i
            for i in node.instances
        ]
        node.status = TaskStatus.PENDING
        node.error = None
        node.finished_at = None
        node.inflight = 0
        node.retry_ready = []
        node.context = None
        # Expansion re-evaluates items and keeps these where they still fit.
        node.instances = kept
        node.tallied = None
        node.items = None
        node.next_index = 0
        node.done = node.failed = 0
    for node in reopened:
        node.deps_left = sum(
            1 for dep in node.spec.depends if state.nodes[dep].status != TaskStatus.SUCCEEDED
        )
        if node.deps_left == 0:
            state.evaluable[node.spec.name] = None
    for node in state.nodes.values():
        if node.status == TaskStatus.SUCCEEDED:
            node.context = None
    state.open_nodes = len(reopened)


def _on_completed(state: RunState, event: RunCompleted) -> None:
    state.status = event.state
    state.reason = event.reason
    state.finished_at = event.at
    state.outputs = event.outputs
    for node in state.nodes.values():
        for inst in node.instances:
            if inst.status not in TERMINAL:
                _move(node, inst, TaskStatus.CANCELLED)
        if node.status not in TERMINAL:
            node.status = TaskStatus.CANCELLED
            node.finished_at = event.at
    state.evaluable.clear()
    state.dispatchable.clear()
    state.retry_due.clear()
    state.signal_due.clear()


_HANDLERS: dict[type[Event], Callable[[RunState, Any], None]] = {
    TaskExpanded: _on_expanded,
    TaskDispatched: _on_dispatched,
    SignalReceived: _on_signal,
    TaskStarted: _on_started,
    TaskSucceeded: _on_succeeded,
    TaskFailed: _on_failed,
    TaskFailedByEngine: _on_engine_failure,
    RetryScheduled: _on_retry_scheduled,
    TimerFired: _on_timer,
    TaskSkipped: _on_skipped,
    RunCancelRequested: _on_cancel,
    RunTimedOut: _on_timed_out,
    RunCompleted: _on_completed,
}
