"""Side effects of durable events: task messages, timers, leases, completion notices.

Carried out only after the events that call for them are in the log (outbox order),
so a coordinator that dies in between repeats them on recovery instead of losing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import msgspec

from contracts.codec import encode, encode_tasks
from contracts.errors import ConveyorError, ExpressionError
from contracts.events import (
    Event,
    RetryScheduled,
    RunCompleted,
    RunRetryRequested,
    RunSubmitted,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    TimerFired,
)
from contracts.messages import CancelTasks, TaskReady
from contracts.ports import ArtifactStore, Timers, Transport
from contracts.topology import CONTROL_TOPIC, shard_queue, task_queue
from contracts.tracing import DISPATCHED_AT_HEADER, run_traceparent
from contracts.vocabulary import AttemptRef, FailureKind, RunStatus
from engine.itemstream import load_items
from engine.leases import Leases
from engine.state.context import render_task
from engine.state.decide import pending_timers, wait_timeouts
from engine.state.items import StreamedItems
from engine.state.model import RunState
from engine.state.subflows import child_started, child_submission, children_to_stop

DISPATCH_BATCH = 32
"""Most tasks carried by one task message."""
DISPATCH_SPREAD = 32
"""Batches form only when there are enough ready tasks for this many messages anyway."""


def batch_size(ready: int, most: int = DISPATCH_BATCH) -> int:
    """Tasks per message when ``ready`` tasks of one pool go out together.

    One each while few are ready, so they spread over every free worker slot; more per
    message only when there are enough to keep ``DISPATCH_SPREAD`` messages going
    anyway. A message's tasks all run on the worker that takes it.
    """
    return max(1, min(most, ready // DISPATCH_SPREAD))


def trace_headers(run_id: str, now: float) -> dict[str, str]:
    """W3C trace context for a dispatch (the run's trace and span), and when it was sent
    (the worker's span shows the wait in the queue)."""
    return {"traceparent": run_traceparent(run_id), DISPATCHED_AT_HEADER: repr(now)}


class Effects:
    def __init__(
        self,
        transport: Transport,
        timers: Timers,
        leases: Leases | None,
        *,
        pinned: Callable[[str, int | None], int],
        clock: Callable[[], float],
        dispatch_batch: int = DISPATCH_BATCH,
        artifacts: ArtifactStore | None = None,
        send_event: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        """``send_event``: sends an event to its run's coordinator shard, wherever that
        run is pinned (a child run's cancel)."""
        self._transport = transport
        self._send_event = send_event or self._to_hashed_shard
        self._timers = timers
        self._leases = leases
        self._pinned = pinned
        """The shard of a run (its id, the shard its submission named)."""
        self._clock = clock
        self._dispatch_batch = max(1, dispatch_batch)
        self._artifacts = artifacts
        """Where fan-out items stored as JSON Lines are read from."""

    async def carry_out(self, events: Sequence[Event], state: RunState) -> list[Event]:
        """Carry out what ``events`` (just made durable) call for.

        Returns the failures of steps that could not be rendered: new facts for the
        caller to record, which call for deciding again.
        """
        dispatches: dict[str, list[TaskReady]] = {}
        failures: list[Event] = []
        reply_to = shard_queue(self._pinned(state.run_id, state.shard))
        leases = self._leases
        unreadable = await self._read_items(events, state)
        for event in events:
            # The common events first: a fan-out's three per item (dispatched, started, ended).
            if isinstance(event, TaskDispatched):
                node = state.nodes[event.task]
                if node.spec.wait:
                    # A wait step runs nowhere; only its timeout needs arming.
                    for due, timeout in wait_timeouts(state, node):
                        await self._timers.schedule(due, timeout)
                elif node.spec.workflow is not None:
                    try:
                        await self._start_child(state, event)
                    except ExpressionError as exc:
                        failures.append(_unrenderable(event, exc))
                elif event.task in unreadable:
                    failures.append(_unreadable(event, unreadable[event.task]))
                else:
                    try:
                        message = render_task(
                            state, event.task, event.index, event.attempt, reply_to=reply_to
                        )
                    except ExpressionError as exc:
                        failures.append(_unrenderable(event, exc))
                        continue
                    dispatches.setdefault(task_queue(node.spec.pool), []).append(message)
            elif isinstance(event, TaskStarted):
                # Only a worker beats for its attempts: a child run can outlast the lease.
                if leases is not None and state.nodes[event.task].spec.runs_on_a_worker:
                    leases.grant(_ref(event), self._clock())
            elif isinstance(event, TaskSucceeded | TaskFailed):
                if leases is not None:
                    leases.release(_ref(event))
            elif isinstance(event, RetryScheduled):
                fired = TimerFired(
                    run_id=event.run_id,
                    at=event.due,
                    task=event.task,
                    index=event.index,
                    attempt=event.attempt,
                )
                await self._timers.schedule(event.due, fired)
            elif isinstance(event, RunSubmitted | RunRetryRequested):
                await self.arm_timers(state)
                if isinstance(event, RunSubmitted) and event.parent is not None:
                    started = child_started(event)
                    await self._transport.publish(
                        shard_queue(event.parent.shard), [encode(started)]
                    )
            elif isinstance(event, RunCompleted):
                await self._completed(state)
        for queue, messages in dispatches.items():
            size = batch_size(len(messages), self._dispatch_batch)
            bodies = [
                encode_tasks(messages[start : start + size])
                for start in range(0, len(messages), size)
            ]
            await self._transport.publish(
                queue, bodies, headers=trace_headers(state.run_id, self._clock())
            )
        return failures

    async def _to_hashed_shard(self, event: Event) -> None:
        shard = self._pinned(event.run_id, None)
        await self._transport.publish(shard_queue(shard), [encode(event)])

    async def _read_items(self, events: Sequence[Event], state: RunState) -> dict[str, str]:
        """Read the stored items the dispatches among ``events`` take (a fan-out over a
        JSON Lines result); returns why, for each task whose items could not be read."""
        wanted: dict[str, tuple[StreamedItems, list[int]]] = {}
        for event in events:
            if not isinstance(event, TaskDispatched):
                continue
            items = state.nodes[event.task].items
            if isinstance(items, StreamedItems):
                wanted.setdefault(event.task, (items, []))[1].append(event.index)
        unreadable: dict[str, str] = {}
        for task, (items, indices) in wanted.items():
            try:
                await load_items(items, indices, self._artifacts)
            except ConveyorError as exc:
                unreadable[task] = exc.message
            except Exception as exc:  # the store is away: the task's retries may cover it
                unreadable[task] = f"{type(exc).__name__}: {exc}"
        return unreadable

    async def arm_timers(self, state: RunState) -> None:
        for due, timer_event in pending_timers(state):
            await self._timers.schedule(due, timer_event)

    async def _start_child(self, state: RunState, event: TaskDispatched) -> None:
        """Submit the child run of one attempt of a workflow step, to its own shard."""
        parent_shard = self._pinned(state.run_id, state.shard)
        child = child_submission(
            state, event.task, event.index, event.attempt, at=event.at, parent_shard=parent_shard
        )
        shard = self._pinned(child.run_id, None)
        child = msgspec.structs.replace(child, shard=shard)
        await self._transport.publish(shard_queue(shard), [encode(child)])

    async def _completed(self, state: RunState) -> None:
        await self._transport.broadcast(
            CONTROL_TOPIC, encode(CancelTasks(run_id=state.run_id, reason=stop_reason(state)))
        )
        if self._leases is not None:
            self._leases.release_run(state.run_id)
        for stop in children_to_stop(state):
            await self._send_event(stop)


def stop_reason(state: RunState) -> str:
    """Why what still runs of a finished run is stopped: a copy of a step sent again
    (after a failover), or the steps of a run cancelled or out of time."""
    if state.status == RunStatus.SUCCEEDED or not state.reason:
        return f"the run already {state.status}"
    return state.reason  # says why it failed or was cancelled


def _ref(event: TaskStarted | TaskSucceeded | TaskFailed) -> AttemptRef:
    return AttemptRef(event.run_id, event.task, event.index, event.attempt)


def _unreadable(event: TaskDispatched, why: str) -> TaskFailed:
    # Retryable: the store may be away for a moment, and the task's retries cover that.
    return _dispatch_failed(event, f"cannot read its item: {why}", FailureKind.ERROR, True)


def _unrenderable(event: TaskDispatched, exc: ExpressionError) -> TaskFailed:
    error = f"cannot render inputs: {exc.message}"
    return _dispatch_failed(event, error, FailureKind.EXPRESSION, False)


def _dispatch_failed(
    event: TaskDispatched, error: str, reason: FailureKind, retryable: bool
) -> TaskFailed:
    return TaskFailed(
        run_id=event.run_id,
        at=event.at,
        task=event.task,
        index=event.index,
        attempt=event.attempt,
        error=error,
        reason=reason,
        retryable=retryable,
    )
