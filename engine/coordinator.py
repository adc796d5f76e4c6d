"""The coordinator: appends events to run logs, folds them, and carries out decisions.

For every event it receives it (1) appends it to the run's log, (2) folds it into the
run's state, (3) asks the pure core what to do, (4) appends those decisions, and only
then (5) publishes the task messages they call for: a dispatch is durable before its
message exists (outbox order). The incoming message is acked after all of that.

Runs are sharded by id over ``shards`` queues. With RabbitMQ each shard queue has a
single active consumer, so extra coordinators are hot standbys; whoever consumes a
shard rebuilds from the log any unfinished run it does not hold (``ShardWake``).

Leases: a started attempt must be renewed by its worker's heartbeats; one that is
not renewed within ``heartbeat_timeout`` is declared lost and runs again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import structlog

from contracts.codec import (
    CoordinatorInput,
    DecodeError,
    decode_coordinator_input,
    encode,
    encode_tasks,
)
from contracts.errors import ConveyorError, ExpressionError, NotFound
from contracts.events import (
    Event,
    RetryScheduled,
    RunCancelRequested,
    RunCompleted,
    RunRetryRequested,
    RunSubmitted,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TimerFired,
)
from contracts.messages import CancelTasks, Heartbeat, ShardWake, TaskReady
from contracts.ports import ArtifactStore, Consumer, Delivery, RunLog, Transport, processing
from contracts.spec import Workflow
from contracts.topology import CONTROL_TOPIC, shard_of, shard_queue, task_queue
from engine.claims import hydrate
from engine.state import decide, fold, new_state, snapshot
from engine.state import model as m
from engine.state.context import render_task
from engine.state.decide import pending_timers
from engine.state.model import RunState
from engine.timers import LoopTimers, Timers

log = structlog.get_logger("conveyor.coordinator")

Observer = Callable[[Event, RunState], None]
LeaseKey = tuple[str, str, int, int]
POISON_LIMIT = 5
"""Failures of one message before it is dead-lettered rather than retried again."""
TimersFactory = Callable[[Callable[[Event], Any]], Timers]
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


class Coordinator:
    def __init__(
        self,
        transport: Transport,
        runlog: RunLog,
        *,
        shards: int = 1,
        clock: Callable[[], float] = time.time,
        timers: TimersFactory | None = None,
        prefetch: int = 64,
        heartbeat_timeout: float | None = None,
        wake_interval: float | None = None,
        snapshot_every: int = 500,
        artifacts: ArtifactStore | None = None,
        dispatch_batch: int = DISPATCH_BATCH,
    ) -> None:
        self._transport = transport
        self._dispatch_batch = max(1, dispatch_batch)
        self._runlog = runlog
        self._shards = shards
        self._clock = clock
        self._timers: Timers = (timers or (lambda fire: LoopTimers(fire, clock)))(
            self.publish_event
        )
        self._prefetch = prefetch
        self._heartbeat_timeout = heartbeat_timeout
        self._wake_interval = wake_interval
        self._snapshot_every = snapshot_every
        self._artifacts = artifacts
        self._runs: dict[str, RunState] = {}
        self._finished: OrderedDict[str, RunState] = OrderedDict()
        self._snapshotted: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[RunState]]] = {}
        self._observers: list[Observer] = []
        self._leases: dict[LeaseKey, float] = {}
        self._failures: dict[bytes, int] = {}
        self._consumers: list[Consumer] = []
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self._timers.start()
        for shard in range(self._shards):
            consumer = await self._transport.consume(shard_queue(shard), prefetch=self._prefetch)
            self._consumers.append(consumer)
            self._loops.append(asyncio.create_task(self._consume(consumer), name=f"shard-{shard}"))
        if self._heartbeat_timeout is not None:
            self._loops.append(asyncio.create_task(self._check_leases(), name="leases"))
        if self._wake_interval is not None:
            self._loops.append(asyncio.create_task(self._wake_shards(), name="wake"))
        log.info("coordinator started", shards=self._shards)

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.close()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._consumers.clear()
        self._loops.clear()
        await self._timers.close()

    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def observe(self, observer: Observer) -> None:
        """Call ``observer(event, state)`` after every event folded into a live run."""
        self._observers.append(observer)

    def forget_all(self) -> None:
        """Drop every run held in memory; they are rebuilt from their logs when next needed.

        Called when the broker connection was lost: another coordinator may have
        advanced our runs meanwhile.
        """
        self._runs.clear()
        self._finished.clear()
        self._leases.clear()

    # -- commands (any process can send them) ---------------------------------------

    async def submit(
        self,
        workflow: Workflow,
        params: dict[str, Any],
        *,
        trigger: str = "cli",
        idempotency_key: str | None = None,
    ) -> str:
        return await submit_run(
            self._transport,
            workflow,
            params,
            shards=self._shards,
            clock=self._clock,
            trigger=trigger,
            idempotency_key=idempotency_key,
        )

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        await self.publish_event(RunCancelRequested(run_id=run_id, at=self._clock(), reason=reason))

    async def wait(self, run_id: str) -> RunState:
        """Wait until the run completes (in this process); returns its final state."""
        done = self._finished.get(run_id)
        if done is not None:
            return done
        future: asyncio.Future[RunState] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(future)
        return await future

    async def publish_event(self, event: Event) -> None:
        await self._transport.publish(
            shard_queue(shard_of(event.run_id, self._shards)), [encode(event)]
        )

    # -- the loop ------------------------------------------------------------------

    async def _consume(self, consumer: Consumer) -> None:
        async for delivery in consumer:
            # Whatever else has arrived is handled with it: events of one run are
            # appended, folded and decided on together (one log round trip, one decision
            # pass), which is what keeps a big fan-out cheap.
            batch = [delivery, *consumer.ready(self._prefetch - 1)]
            groups: dict[str, list[Event]] = {}
            grouped: list[tuple[Delivery, set[str]]] = []
            singles: list[tuple[Delivery, list[CoordinatorInput] | None]] = []
            for item in batch:
                try:
                    inputs = decode_coordinator_input(item.body)
                except DecodeError:
                    singles.append((item, None))
                    continue
                if all(self._groupable(message) for message in inputs):
                    runs: set[str] = set()
                    for event in inputs:
                        assert isinstance(event, Event)
                        groups.setdefault(event.run_id, []).append(event)
                        runs.add(event.run_id)
                    grouped.append((item, runs))
                else:
                    singles.append((item, inputs))
            failed = {run_id for run_id, events in groups.items() if not await self._group(events)}
            for item, runs in grouped:
                if runs & failed:
                    await self._settle_one(item, None)  # one by one, carefully
                else:
                    await item.ack()
            for item, decoded in singles:
                await self._settle_one(item, decoded)

    def _groupable(self, message: CoordinatorInput) -> bool:
        """Events of runs held live here; anything else takes the one-by-one path."""
        return (
            isinstance(message, Event)
            and not isinstance(message, RunSubmitted)
            and message.run_id in self._runs
        )

    async def _settle_one(self, delivery: Delivery, inputs: list[CoordinatorInput] | None) -> None:
        """Handle one message and settle its delivery (the path every message can take)."""
        try:
            async with processing(delivery):
                if inputs is None:
                    inputs = decode_coordinator_input(delivery.body)
                for message in inputs:
                    if isinstance(message, Heartbeat):
                        self._renew(message)
                    elif isinstance(message, ShardWake):
                        await self._sweep(message.shard)
                    else:
                        with structlog.contextvars.bound_contextvars(run_id=message.run_id):
                            await self._handle_guarded(message, delivery.body)
        except ConveyorError as exc:
            if exc.retryable:
                log.exception("event handling failed; message requeued")
            else:
                log.error("dead-lettered a message", error=exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event handling failed; message requeued")

    async def _group(self, events: list[Event]) -> bool:
        """Handle several events of one live run at once; False to fall back to one by one."""
        run_id = events[0].run_id
        state = self._runs[run_id]
        try:
            with structlog.contextvars.bound_contextvars(run_id=run_id):
                await self._apply(state, events)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch handling failed; handling its events one by one")
            await self._reload(run_id)
            return False
        return True

    async def _handle_guarded(self, event: Event, body: bytes) -> None:
        """Handle an event; one that keeps failing is dead-lettered instead of looping."""
        key = hashlib.blake2b(body, digest_size=16).digest()
        try:
            await self.handle(event)
        except ConveyorError as exc:
            if not exc.retryable:
                raise
            self._count_failure(key, exc)
            raise
        except Exception as exc:
            self._count_failure(key, exc)
            raise
        self._failures.pop(key, None)

    def _count_failure(self, key: bytes, exc: Exception) -> None:
        count = self._failures.get(key, 0) + 1
        if count < POISON_LIMIT:
            self._failures[key] = count
            return
        self._failures.pop(key, None)
        raise ConveyorError(
            f"handling failed {count} times, dead-lettered: {type(exc).__name__}: {exc}",
            retryable=False,
        ) from exc

    async def handle(self, event: Event) -> None:
        """Append, fold, decide and act for one incoming event."""
        run_id = event.run_id
        state = self._runs.get(run_id) or self._finished.get(run_id)
        if state is None:
            state = await self._recover(run_id)
        if state is None:
            if not isinstance(event, RunSubmitted):
                log.warning("event for an unknown run dropped", event_id=event.id)
                return
            state = new_state(event)
            log.info("run submitted", workflow=state.workflow.name, tasks=len(state.nodes))
            await self._apply(state, [event], folded=True)
        else:
            await self._apply(state, [event])

    async def _apply(self, state: RunState, events: list[Event], *, folded: bool = False) -> None:
        """Fold incoming events, decide, and make both durable in one log round trip.

        The decisions are appended only if every incoming event was new: then the state
        they were made on is the log's. Otherwise (a redelivery, or an append whose
        answer was lost) the log knows more than we do, and the run is rebuilt from it.
        Only once all of it is durable are its side effects carried out (outbox order).
        """
        try:
            if not folded:
                for event in events:
                    fold(state, await hydrate(event, self._artifacts))
            decisions = _decide(state)
            if not events and not decisions:
                return
            added = await self._runlog.append(state.run_id, events, then=decisions)
        except BaseException:
            # The state may now be ahead of the log: never keep it. Whoever handles
            # these events again starts from the log.
            self._runs.pop(state.run_id, None)
            self._finished.pop(state.run_id, None)
            raise
        if not all(added):
            # Decisions are a function of the state: one already in the log means our
            # state was behind the log.
            log.debug("events already in the log; rebuilding the run from it")
            await self._reload(state.run_id)
            return
        self._remember(state)
        for event in events:
            self._notify(event, state)
        for decision in decisions:
            self._notify(decision, state)
        if await self._effects([*events, *decisions], state):
            await self._apply(state, [])  # steps that could not be rendered failed: decide again
        await self._maybe_snapshot(state)

    async def _reload(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        self._finished.pop(run_id, None)
        await self._recover(run_id)

    async def _recover(self, run_id: str) -> RunState | None:
        """Rebuild a run this coordinator does not hold from its log, and catch up."""
        try:
            blob, events = await self._runlog.load(run_id)
        except NotFound:
            return None
        if blob is not None:
            state = snapshot.load(blob)
        else:
            first = events.pop(0)
            assert isinstance(first, RunSubmitted)
            state = new_state(first)
        for event in events:
            fold(state, await hydrate(event, self._artifacts))
        self._snapshotted[run_id] = state.events_folded
        self._remember(state)
        if state.finished:
            return state
        log.info("run recovered from its log", events=state.events_folded)
        for due, timer_event in pending_timers(state):
            await self._timers.schedule(due, timer_event)
        now = self._clock()
        republish: list[TaskDispatched] = []
        for node in state.nodes.values():
            for index, inst in enumerate(node.instances):
                key = (run_id, node.spec.name, index, inst.attempt)
                if inst.status == m.RUNNING and self._heartbeat_timeout is not None:
                    self._leases[key] = now  # a grace period for its worker's next heartbeat
                elif inst.status == m.DISPATCHED:
                    # Its message may never have been published (we died in between);
                    # publishing it again is harmless: results are idempotent.
                    republish.append(
                        TaskDispatched(
                            run_id=run_id,
                            at=state.now,
                            task=node.spec.name,
                            index=index,
                            attempt=inst.attempt,
                        )
                    )
        await self._effects(republish, state)
        await self._apply(state, [])
        return state

    def _remember(self, state: RunState) -> None:
        if state.finished:
            self._finished[state.run_id] = state
            self._runs.pop(state.run_id, None)
            while len(self._finished) > 256:
                self._finished.popitem(last=False)
        else:
            self._runs[state.run_id] = state
            self._finished.pop(state.run_id, None)  # a retried run is live again

    async def _effects(self, events: Sequence[Event], state: RunState) -> bool:
        """Side effects called for by events just made durable.

        Returns whether it recorded new facts (steps that could not be rendered), which
        call for deciding again.
        """
        dispatches: dict[str, list[TaskReady]] = {}
        failures: list[Event] = []
        reply_to = shard_queue(shard_of(state.run_id, self._shards))
        for event in events:
            if isinstance(event, TaskDispatched):
                try:
                    message = render_task(state, event.task, event.index, event.attempt)
                except ExpressionError as exc:
                    failures.append(
                        TaskFailed(
                            run_id=state.run_id,
                            at=event.at,
                            task=event.task,
                            index=event.index,
                            attempt=event.attempt,
                            error=f"cannot render inputs: {exc.message}",
                            reason="expression",
                            retryable=False,
                        )
                    )
                    continue
                message = _with_reply_to(message, reply_to)
                pool = state.nodes[event.task].spec.pool
                dispatches.setdefault(task_queue(pool), []).append(message)
            elif isinstance(event, TaskStarted) and self._heartbeat_timeout is not None:
                self._leases[(event.run_id, event.task, event.index, event.attempt)] = self._clock()
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
                for due, timer_event in pending_timers(state):
                    await self._timers.schedule(due, timer_event)
            elif isinstance(event, RunCompleted):
                await self._completed(state)
            if self._leases and (outcome := _attempt_outcome(event)) is not None:
                self._leases.pop(outcome, None)
        for queue, messages in dispatches.items():
            size = batch_size(len(messages), self._dispatch_batch)
            bodies = [
                encode_tasks(messages[start : start + size])
                for start in range(0, len(messages), size)
            ]
            await self._transport.publish(queue, bodies, headers=trace_headers(state.run_id))
        for failure in failures:
            await self._runlog.append(state.run_id, [failure])
            fold(state, failure)
            self._notify(failure, state)
        return bool(failures)

    async def _completed(self, state: RunState) -> None:
        log.info("run completed", state=state.status, reason=state.reason)
        await self._transport.broadcast(
            CONTROL_TOPIC,
            encode(CancelTasks(run_id=state.run_id, reason=state.reason or state.status)),
        )
        for key in [k for k in self._leases if k[0] == state.run_id]:
            del self._leases[key]
        self._remember(state)
        await self._runlog.save_snapshot(state.run_id, snapshot.dump(state))
        for future in self._waiters.pop(state.run_id, []):
            if not future.done():
                future.set_result(state)

    async def _maybe_snapshot(self, state: RunState) -> None:
        last = self._snapshotted.get(state.run_id, 0)
        # A snapshot costs time in proportion to the run's size: spacing them by the
        # events folded so far keeps the cost per event constant for a huge fan-out.
        if state.finished or state.events_folded - last < max(self._snapshot_every, last):
            return
        if await self._runlog.save_snapshot(state.run_id, snapshot.dump(state)):
            self._snapshotted[state.run_id] = state.events_folded

    def _notify(self, event: Event, state: RunState) -> None:
        for observer in self._observers:
            try:
                observer(event, state)
            except Exception:
                log.exception("observer failed")

    # -- liveness --------------------------------------------------------------------

    def _renew(self, beat: Heartbeat) -> None:
        now = self._clock()
        for ref in beat.attempts:
            key = (ref.run_id, ref.task, ref.index, ref.attempt)
            if key in self._leases:
                self._leases[key] = now

    async def _check_leases(self) -> None:
        assert self._heartbeat_timeout is not None
        timeout = self._heartbeat_timeout
        while True:
            await asyncio.sleep(timeout / 4)
            now = self._clock()
            expired = [key for key, seen in self._leases.items() if now - seen > timeout]
            for key in expired:
                self._leases.pop(key, None)
                run_id, task, index, attempt = key
                log.warning(
                    "attempt lost: no heartbeat",
                    run_id=run_id,
                    task=task,
                    index=index,
                    attempt=attempt,
                )
                await self.publish_event(
                    TaskFailed(
                        run_id=run_id,
                        at=now,
                        task=task,
                        index=index,
                        attempt=attempt,
                        error=f"no heartbeat from its worker for {timeout:g}s",
                        reason="lost",
                    )
                )

    async def _wake_shards(self) -> None:
        assert self._wake_interval is not None
        while True:
            for shard in range(self._shards):
                wake = ShardWake(shard=shard, at=self._clock())
                await self._transport.publish(shard_queue(shard), [encode(wake)])
            await asyncio.sleep(self._wake_interval)

    async def _sweep(self, shard: int) -> None:
        """Take up every unfinished run of ``shard`` that this coordinator does not hold."""
        for run_id in await self._runlog.running():
            if shard_of(run_id, self._shards) == shard and run_id not in self._runs:
                with structlog.contextvars.bound_contextvars(run_id=run_id):
                    await self._recover(run_id)

    def is_finished(self, run_id: str) -> bool:
        return run_id in self._finished


def _decide(state: RunState) -> list[Event]:
    """Decide to a fixpoint, folding each decision (later ones depend on earlier ones)."""
    batch: list[Event] = []
    while decisions := decide(state):
        for decision in decisions:
            fold(state, decision)
        batch.extend(decisions)
    return batch


def _with_reply_to(message: TaskReady, reply_to: str) -> TaskReady:
    return msgspec.structs.replace(message, reply_to=reply_to)


def _attempt_outcome(event: Event) -> LeaseKey | None:
    if event.kind in ("task_succeeded", "task_failed"):
        task_event: Any = event
        return (event.run_id, task_event.task, task_event.index, task_event.attempt)
    return None


async def submit_run(
    transport: Transport,
    workflow: Workflow,
    params: dict[str, Any],
    *,
    shards: int,
    clock: Callable[[], float] = time.time,
    trigger: str = "cli",
    idempotency_key: str | None = None,
) -> str:
    """Send a run to its coordinator shard; returns the run id.

    The same idempotency key always gives the same run id, and the coordinator appends
    the submission only once.
    """
    if idempotency_key is not None:
        run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:{idempotency_key}").hex
    else:
        run_id = uuid.uuid4().hex
    event = RunSubmitted(
        run_id=run_id,
        at=clock(),
        workflow=workflow.model_dump(mode="json", exclude_unset=True),
        params=params,
        trigger=trigger,
        idempotency_key=idempotency_key,
    )
    await transport.publish(shard_queue(shard_of(run_id, shards)), [encode(event)])
    return run_id


def trace_headers(run_id: str) -> dict[str, str]:
    """W3C trace context for a dispatch: the run is the trace, each dispatch a span."""
    trace_id = run_id if len(run_id) == 32 else uuid.uuid5(uuid.NAMESPACE_URL, run_id).hex
    return {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
