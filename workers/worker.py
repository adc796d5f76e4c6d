"""The worker: takes task messages from its pool's queue, runs them, reports outcomes.

Stateless: everything it knows arrives in the message, and every event it produces
goes to the queue the message names (``reply_to``: its run's coordinator shard).

A task message (one task, or a batch of them when many were ready at once) is
acked once the ``TaskStarted`` of its attempts is confirmed by the broker (a lone
step that ends within ``START_HOLD`` sends its start together with its outcome). From then
on the coordinator owns the attempts' liveness through this worker's heartbeats: a
worker that dies or hangs stops beating and its attempts are declared lost and run
again. So a step may run longer than the broker's consumer timeout, and a message is
never held for the length of a step. Attempts of a batch wait for a free slot here;
the worker takes another message only when a slot is free.

A worker is sent no more messages than it has free slots (``workers.intake``).

Events go out through an outbox that coalesces those ready together into one message.

Stopping (SIGTERM): take no more tasks, let running steps finish within the grace
period, then kill the rest and hand them back (reported as ``lost``, so they run
again at once elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from contracts.codec import DecodeError, decode_control
from contracts.errors import StepError
from contracts.events import Event
from contracts.messages import TaskReady
from contracts.ports import (
    ArtifactStore,
    Delivery,
    Listener,
    TaskLogStore,
    Transport,
    processing,
)
from contracts.supervision import Supervisor, stop_loops
from contracts.topology import CONTROL_TOPIC
from contracts.tracing import DISPATCHED_AT_HEADER
from contracts.values import MAX_VALUE_BYTES
from contracts.vocabulary import AttemptRef, FailureKind
from workers.cache import StepCache
from workers.executors import (
    DEFAULT_MIDDLEWARE,
    Executor,
    ExecutorChain,
    Middleware,
    StepCall,
    StepOutcome,
    default_executors,
)
from workers.heartbeats import beat
from workers.intake import TaskIntake
from workers.logbuffer import LogBuffer
from workers.outbox import EventOutbox
from workers.outcomes import HANDED_BACK, Interruption, outcome_event, unsent_event
from workers.staging import fetch_stored_values, stage_inputs, store_outputs
from workers.starts import START_HOLD, HeldStarts
from workers.tracing import attempt_trace

log = structlog.get_logger("conveyor.worker")

STOP_LIMIT = 10.0
"""Seconds a stop waits for the steps it cancels (after the grace period) to end. A
step that catches every cancel is left behind: its attempt runs again elsewhere once
its lease ends, as if this worker had died."""

_counter = 0

_CURRENT_DIR = Path(".")


def _worker_name() -> str:
    global _counter
    _counter += 1
    return f"{socket.gethostname()}:{os.getpid()}:{_counter}"


def _stamp(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class Worker:
    def __init__(
        self,
        transport: Transport,
        logs: TaskLogStore,
        *,
        pool: str = "default",
        concurrency: int = 1,
        name: str | None = None,
        executors: dict[str, Executor] | None = None,
        middleware: Sequence[Middleware] = DEFAULT_MIDDLEWARE,
        clock: Callable[[], float] = time.time,
        heartbeat_interval: float | None = None,
        artifacts: ArtifactStore | None = None,
        max_result_bytes: int = MAX_VALUE_BYTES,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._concurrency = concurrency
        self.name = name or _worker_name()
        self._steps = ExecutorChain(executors or default_executors(worker=self.name), middleware)
        self._artifacts = artifacts
        self._max_result_bytes = max_result_bytes
        self._cache = StepCache(artifacts, clock)
        self._clock = clock
        self._heartbeat_interval = heartbeat_interval
        self._logs = LogBuffer(logs, clock)
        self._slots = asyncio.Semaphore(concurrency)
        self.room = asyncio.Event()
        """Set while fewer attempts are taken (and not finished) than there are slots."""
        self.room.set()
        self._outbox = EventOutbox(transport)
        # Bound once: resolving the module's lazy logger on every call costs more than a
        # no-op step.
        self._log = log.bind(worker=self.name)
        self._intake = TaskIntake(transport, pool, self, log=self._log)
        self._listener: Listener | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._accepting: set[asyncio.Task[None]] = set()
        """Acks in progress: the tasks reporting a message's attempts started."""
        self._starts = HeldStarts(self._outbox)
        self._running: dict[AttemptRef, tuple[asyncio.Task[None], str]] = {}
        self._cancelled: dict[AttemptRef, Interruption] = {}
        self._reporting: set[AttemptRef] = set()
        """Attempts whose step has finished and whose outcome is on its way."""
        self.supervisor = Supervisor(f"worker {self.name}")
        self._hurried = asyncio.Event()

    async def start(self) -> None:
        self._logs.start()
        await self._steps.start()
        self._listener = self._transport.listen(CONTROL_TOPIC)
        await self._listener.ready()
        await self._intake.open()
        self._loops = [
            asyncio.create_task(self._intake.run(), name=f"worker-{self.name}"),
            asyncio.create_task(self._control(self._listener), name=f"control-{self.name}"),
        ]
        if self._heartbeat_interval is not None:
            beating = beat(
                self._transport,
                self.name,
                self._heartbeat_interval,
                self._clock,
                lambda: [(ref, reply_to) for ref, (_t, reply_to) in self._running.items()],
            )
            self._loops.append(asyncio.create_task(beating, name=f"heartbeat-{self.name}"))
        for loop in self._loops:
            self.supervisor.watch(loop)
        log.info("worker started", worker=self.name, pool=self._pool, concurrency=self._concurrency)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking tasks; let running ones finish for ``grace`` seconds, then hand back."""
        self.supervisor.stopping = True
        self._intake.stop_taking()
        deadline = time.monotonic() + grace
        # Steps start before their message is acked: settle what is being acked, or
        # closing the consumer would send back messages whose steps already ran.
        await self.accepted(timeout=grace)
        await self._intake.close()  # messages not started yet go back to the queue
        await stop_loops(self._loops[:1])  # the intake
        if self._handlers:
            log.info(
                "waiting for running steps",
                worker=self.name,
                running=len(self._running),
                grace=grace,
            )
            hurried = asyncio.ensure_future(self._hurried.wait())
            while (
                self._handlers and not hurried.done() and (left := deadline - time.monotonic()) > 0
            ):
                await asyncio.wait(
                    [*self._handlers, hurried], timeout=left, return_when="FIRST_COMPLETED"
                )
            hurried.cancel()
            for key in self._running.keys() - self._reporting:
                self._cancelled[key] = HANDED_BACK
            stubborn = await stop_loops(self._handlers, within=STOP_LIMIT, spare=self._is_reporting)
            if stubborn:
                log.error(
                    "steps ran on after being cancelled; left behind to their leases",
                    worker=self.name,
                    steps=len(stubborn),
                )
            await self._outbox.drain()
        await stop_loops(self._loops[1:])
        if self._listener is not None:
            await self._listener.aclose()
        await self._steps.stop()
        await self._logs.close()
        log.info("worker stopped", worker=self.name)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def hurry(self) -> None:
        """End a stop's grace period now: the steps still running are handed back."""
        self._hurried.set()

    def _is_reporting(self, handler: asyncio.Task[None]) -> bool:
        return any(t is handler for key, (t, _r) in self._running.items() if key in self._reporting)

    @property
    def busy(self) -> int:
        return len(self._handlers)

    def free_slots(self) -> int:
        return self._concurrency - (len(self._running) - len(self._reporting))

    async def accepted(self, timeout: float | None = None) -> None:
        """Returns once the messages taken so far are acked (or ``timeout`` passes)."""
        if self._accepting:
            await asyncio.wait(list(self._accepting), timeout=timeout)

    def _update_room(self) -> None:
        if self.free_slots() > 0:
            self.room.set()
        else:
            self.room.clear()

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        handler = asyncio.create_task(coroutine)
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        return handler

    def take(self, delivery: Delivery, tasks: list[TaskReady]) -> None:
        """Start the attempts of a message while ``_accept`` reports them started.

        A step does not wait for its ``TaskStarted`` to be confirmed: that is a broker
        round trip (a quorum queue's disk write) that would sit between every two steps
        and hold a slot idle. The message is acked once the report is confirmed; should
        the report fail, the message goes back and its attempts are stopped.
        """
        traceparent = delivery.headers.get("traceparent")
        dispatched = _stamp(delivery.headers.get(DISPATCHED_AT_HEADER))
        # Held before any step can end, so an outcome never overtakes its start.
        announced = [self._starts.hold(task, self._clock(), self.name) for task in tasks]
        for task in tasks:
            attempt = self._spawn(self._attempt(task, traceparent, dispatched))
            self._running[task.ref] = (attempt, task.reply_to)
        self._update_room()
        accepting = self._spawn(self._accept(delivery, tasks, announced))
        self._accepting.add(accepting)
        accepting.add_done_callback(self._accepting.discard)

    async def _accept(
        self,
        delivery: Delivery,
        tasks: list[TaskReady],
        announced: list[asyncio.Future[None]],
    ) -> None:
        """Report the attempts started, then ack their message.

        The start of a one-task message is held for ``START_HOLD`` first, for a quick
        step to carry it with its outcome (``workers.starts``). A batch's starts already
        share one message, and most of its attempts wait for a slot longer than a hold.
        """
        try:
            async with processing(delivery):
                try:
                    if len(tasks) == 1:
                        await asyncio.wait(announced, timeout=START_HOLD)
                    await self._starts.announce(tasks)
                    await asyncio.gather(*announced)
                except BaseException:
                    self._withdraw(tasks)  # before the message goes back and is taken again
                    raise
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("could not take a task message; it was requeued")
        finally:
            self._starts.forget(tasks, announced)
        # Acked: the attempts are ours now, kept alive by heartbeats.

    def _withdraw(self, tasks: list[TaskReady]) -> None:
        """Stop the attempts of a message that went back: they run again from the queue
        (a step already reporting its outcome is left to finish)."""
        for task in tasks:
            entry = self._running.get(task.ref)
            if entry is not None and task.ref not in self._reporting:
                entry[0].cancel()

    async def _attempt(
        self, message: TaskReady, traceparent: str | None, dispatched: float | None
    ) -> None:
        # Each attempt is its own asyncio task with its own context: what is bound here
        # goes with it and needs no unbinding.
        structlog.contextvars.bind_contextvars(
            run_id=message.run_id,
            task=message.task,
            index=message.index,
            attempt=message.attempt,
            traceparent=traceparent,
        )
        attempt_trace.set((traceparent, dispatched))
        try:
            await self._execute(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("task handling failed")

    async def _execute(self, message: TaskReady) -> None:
        ref = message.ref
        current = asyncio.current_task()
        assert current is not None
        started: float | None = None  # once it has a slot
        try:
            emit = self._logs.emitter(message.run_id, message.task, message.index, message.attempt)
            try:
                async with self._slots:
                    started = time.monotonic()
                    outcome = await (
                        self._run_step(message, emit)
                        if message.step.cache is None
                        else self._cache.run(message, emit, self._run_step)
                    )
                    duration = time.monotonic() - started
            except asyncio.CancelledError:
                interruption = self._cancelled.pop(ref, None)
                if interruption is None:
                    raise
                while current.uncancel():  # every cancel was this one (stop may repeat it)
                    pass
                outcome = interruption.outcome()
                duration = 0.0 if started is None else time.monotonic() - started
            self._reporting.add(ref)  # nothing left to cancel; heartbeats go on until sent
            self._update_room()
            if not outcome.ok:
                emit("system", f"step failed ({outcome.reason}): {outcome.error}")
            await self._logs.flush()
            event = outcome_event(message, outcome, self._clock(), duration, list(emit.stderr_tail))
            await self._report(message, event)
        finally:
            self._running.pop(ref, None)
            self._cancelled.pop(ref, None)
            self._reporting.discard(ref)
            self._update_room()

    async def _run_step(self, message: TaskReady, emit: Callable[[str, str], None]) -> StepOutcome:
        step = message.step
        # Python steps without files to move get no scratch directory: making and removing
        # one costs more than a small step itself.
        needs_dir = (
            step.kind in ("script", "command", "container")
            or step.artifacts_in
            or step.artifacts_out
        )
        with (
            tempfile.TemporaryDirectory(prefix="conveyor-step-")
            if needs_dir
            else contextlib.nullcontext(".")
        ) as scratch:
            # A container's workdir names a path inside it; on the host it is the scratch dir.
            if step.workdir and step.kind != "container":
                workdir = Path(step.workdir)
            elif needs_dir:
                workdir = Path(scratch) / "work"
            else:
                workdir = _CURRENT_DIR
            try:
                if needs_dir:
                    workdir.mkdir(parents=True, exist_ok=True)
                await stage_inputs(message, workdir, self._artifacts)
                message = await fetch_stored_values(message, self._artifacts)
                outcome = await self._steps.run(StepCall(message, emit, workdir, self._log))
                if outcome.ok:
                    await store_outputs(
                        message, workdir, self._artifacts, outcome, self._max_result_bytes
                    )
            except StepError as exc:
                emit("system", exc.message)
                return StepOutcome(
                    ok=False, error=exc.message, reason=exc.kind, retryable=exc.retryable
                )
            except OSError as exc:
                return StepOutcome(
                    ok=False, error=f"working directory: {exc}", reason=FailureKind.START
                )
            except Exception as exc:
                # Whatever goes wrong handling an attempt is the attempt's failure, with
                # its reason: never a run left waiting for an outcome that will not come.
                error = f"{type(exc).__name__}: {exc}"
                emit("system", f"the worker failed handling this step: {error}")
                with contextlib.suppress(Exception):  # not even a broken log stream
                    self._log.exception("step handling failed")
                return StepOutcome(ok=False, error=error, reason=FailureKind.ERROR)
            return outcome

    async def _report(self, message: TaskReady, event: Event) -> None:
        """Send an attempt's outcome (with its start, if that is still held back); an
        outcome that cannot be sent is reported as a failure."""
        try:
            await self._starts.send_with(message.reply_to, message.ref, event)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._log.exception("could not send the step's outcome")
            failed = unsent_event(message, self._clock(), exc)
            await self._starts.send_with(message.reply_to, message.ref, failed, last=True)

    async def _control(self, listener: Listener) -> None:
        async for body in listener:
            try:
                command = decode_control(body)
            except DecodeError as exc:
                log.warning("ignored an undecodable control message", error=str(exc))
                continue
            for ref, (task, _reply) in list(self._running.items()):
                if ref in self._reporting:
                    continue
                if ref.run_id == command.run_id and command.task in (None, ref.task):
                    self._cancelled[ref] = Interruption(
                        FailureKind.CANCELLED, command.reason or "cancelled"
                    )
                    task.cancel()
