"""The coordinator: appends events to run logs, folds them, and carries out decisions.

For every event it receives it (1) appends it to the run's log, (2) folds it into the
run's state, (3) asks the pure core what to do, (4) appends those decisions, and only
then (5) publishes the task messages they call for: a dispatch is durable before its
message exists (outbox order). The incoming message is acked after all of that.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from contracts.codec import DecodeError, decode_event, encode
from contracts.errors import ConveyorError, ExpressionError, NotFound
from contracts.events import (
    Event,
    RetryScheduled,
    RunCancelRequested,
    RunCompleted,
    RunSubmitted,
    TaskDispatched,
    TaskFailed,
    TimerFired,
)
from contracts.messages import CancelTasks
from contracts.ports import Consumer, RunLog, Transport, processing
from contracts.spec import Workflow
from contracts.topology import CONTROL_TOPIC, COORDINATOR_QUEUE, task_queue
from engine.state import decide, fold, new_state, replay
from engine.state.context import render_task
from engine.state.decide import pending_timers
from engine.state.model import RunState
from engine.timers import LoopTimers, Timers

log = structlog.get_logger("conveyor.coordinator")

Observer = Callable[[Event, RunState], None]


class Coordinator:
    def __init__(
        self,
        transport: Transport,
        runlog: RunLog,
        *,
        clock: Callable[[], float] = time.time,
        timers: Timers | None = None,
        prefetch: int = 64,
    ) -> None:
        self._transport = transport
        self._runlog = runlog
        self._clock = clock
        self._timers = timers or LoopTimers(self._publish_event, clock)
        self._prefetch = prefetch
        self._runs: dict[str, RunState] = {}
        self._finished: OrderedDict[str, RunState] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[RunState]]] = {}
        self._observers: list[Observer] = []
        self._consumer: Consumer | None = None
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._consumer = await self._transport.consume(COORDINATOR_QUEUE, prefetch=self._prefetch)
        self._loop_task = asyncio.create_task(self._consume(self._consumer), name="coordinator")

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.close()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._timers.close()

    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def observe(self, observer: Observer) -> None:
        """Call ``observer(event, state)`` after every event folded into a live run."""
        self._observers.append(observer)

    # -- commands ------------------------------------------------------------------

    async def submit(
        self,
        workflow: Workflow,
        params: dict[str, Any],
        *,
        trigger: str = "cli",
        idempotency_key: str | None = None,
    ) -> str:
        """Start a run; returns its id. The same idempotency key always gives the same run."""
        if idempotency_key is not None:
            run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:{idempotency_key}").hex
        else:
            run_id = uuid.uuid4().hex
        event = RunSubmitted(
            run_id=run_id,
            at=self._clock(),
            workflow=workflow.model_dump(mode="json", exclude_unset=True),
            params=params,
            trigger=trigger,
            idempotency_key=idempotency_key,
        )
        await self._publish_event(event)
        return run_id

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        await self._publish_event(
            RunCancelRequested(run_id=run_id, at=self._clock(), reason=reason)
        )

    async def wait(self, run_id: str) -> RunState:
        """Wait until the run completes; returns its final state."""
        done = self._finished.get(run_id)
        if done is not None:
            return done
        future: asyncio.Future[RunState] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(future)
        return await future

    async def _publish_event(self, event: Event) -> None:
        await self._transport.publish(COORDINATOR_QUEUE, [encode(event)])

    # -- the loop ------------------------------------------------------------------

    async def _consume(self, consumer: Consumer) -> None:
        async for delivery in consumer:
            try:
                async with processing(delivery):
                    event = decode_event(delivery.body)
                    with structlog.contextvars.bound_contextvars(run_id=event.run_id):
                        await self.handle(event)
            except DecodeError as exc:
                log.error("dead-lettered an undecodable message", error=str(exc))
            except Exception:
                log.exception("event handling failed; message requeued")

    async def handle(self, event: Event) -> None:
        """Append, fold, decide and act for one incoming event."""
        run_id = event.run_id
        state = self._runs.get(run_id) or self._finished.get(run_id)
        if state is None:
            state = await self._recover(run_id)
            if state is None and not isinstance(event, RunSubmitted):
                log.warning("event for an unknown run dropped", event_id=event.id)
                return
        (appended,) = await self._runlog.append(run_id, [event])
        if not appended:
            log.debug("duplicate event ignored", event_id=event.id)
            return
        if state is None:
            assert isinstance(event, RunSubmitted)
            state = new_state(event)
            self._runs[run_id] = state
            log.info("run submitted", workflow=state.workflow.name, tasks=len(state.nodes))
        else:
            fold(state, event)
        self._notify(event, state)
        await self._effects([event], state)
        await self._advance(state)

    async def _recover(self, run_id: str) -> RunState | None:
        """Rebuild a run this coordinator does not hold from its log, and catch up."""
        try:
            events = await self._runlog.read(run_id)
        except NotFound:
            return None
        state = replay(events)
        self._remember(state)
        if not state.finished:
            log.info("run recovered from its log", events=len(events))
            for due, timer_event in pending_timers(state):
                self._timers.schedule(due, timer_event)
            await self._advance(state)
        return state

    def _remember(self, state: RunState) -> None:
        if state.finished:
            self._finished[state.run_id] = state
            self._runs.pop(state.run_id, None)
            while len(self._finished) > 256:
                self._finished.popitem(last=False)
        else:
            self._runs[state.run_id] = state

    async def _advance(self, state: RunState) -> None:
        while True:
            decisions = decide(state)
            if not decisions:
                return
            added = await self._runlog.append(state.run_id, decisions)
            folded: list[Event] = []
            for decision, new in zip(decisions, added, strict=True):
                if new:
                    fold(state, decision)
                    folded.append(decision)
                    self._notify(decision, state)
            await self._effects(folded, state)
            if not folded:
                return

    async def _effects(self, events: Sequence[Event], state: RunState) -> None:
        """Side effects called for by events just made durable."""
        dispatches: dict[str, list[bytes]] = {}
        failures: list[Event] = []
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
                pool = state.nodes[event.task].spec.pool
                dispatches.setdefault(task_queue(pool), []).append(encode(message))
            elif isinstance(event, RetryScheduled):
                for due, timer_event in _retry_timer(event):
                    self._timers.schedule(due, timer_event)
            elif isinstance(event, RunSubmitted):
                for due, timer_event in pending_timers(state):
                    self._timers.schedule(due, timer_event)
            elif isinstance(event, RunCompleted):
                await self._completed(state)
        for queue, bodies in dispatches.items():
            await self._transport.publish(queue, bodies)
        for failure in failures:
            await self._runlog.append(state.run_id, [failure])
            fold(state, failure)
            self._notify(failure, state)

    async def _completed(self, state: RunState) -> None:
        log.info("run completed", state=state.status, reason=state.reason)
        inflight = any(node.inflight for node in state.nodes.values())
        if inflight or state.status == "cancelled":
            await self._transport.broadcast(
                CONTROL_TOPIC, encode(CancelTasks(run_id=state.run_id, reason=state.reason))
            )
        self._remember(state)
        for future in self._waiters.pop(state.run_id, []):
            if not future.done():
                future.set_result(state)

    def _notify(self, event: Event, state: RunState) -> None:
        for observer in self._observers:
            try:
                observer(event, state)
            except Exception:
                log.exception("observer failed")

    def run_state(self, run_id: str) -> RunState:
        state = self._runs.get(run_id) or self._finished.get(run_id)
        if state is None:
            raise ConveyorError(f"run {run_id!r} is not loaded")
        return state


def _retry_timer(event: RetryScheduled) -> list[tuple[float, Event]]:
    fired = TimerFired(
        run_id=event.run_id, at=event.due, task=event.task, index=event.index, attempt=event.attempt
    )
    return [(event.due, fired)]
