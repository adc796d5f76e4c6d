"""The worker: takes task messages from its pool's queue, runs them, reports outcomes.

Stateless: everything it knows arrives in the message. A message is acked only after
the outcome event has been published (and so is durable at the broker). Stopping
hands back unfinished work: after the grace period, running steps are killed and
their messages requeued for another worker.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from contracts.codec import DecodeError, decode_control, decode_task, encode
from contracts.events import Event, TaskFailed, TaskStarted, TaskSucceeded
from contracts.messages import TaskReady
from contracts.ports import Consumer, Delivery, TaskLogStore, Transport, processing
from contracts.topology import CONTROL_TOPIC, COORDINATOR_QUEUE, task_queue
from workers.executors import Executor, StepOutcome, default_executors
from workers.logbuffer import LogBuffer

log = structlog.get_logger("conveyor.worker")

_counter = 0


def _worker_name() -> str:
    global _counter
    _counter += 1
    return f"{socket.gethostname()}:{os.getpid()}:{_counter}"


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._concurrency = concurrency
        self.name = name or _worker_name()
        self._executors = executors or default_executors()
        self._clock = clock
        self._logs = LogBuffer(logs, clock)
        self._consumer: Consumer | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._running: dict[tuple[str, str, int, int], asyncio.Task[None]] = {}
        self._cancelled: dict[tuple[str, str, int, int], str] = {}
        self._listener: Any = None

    async def start(self) -> None:
        self._logs.start()
        self._listener = self._transport.listen(CONTROL_TOPIC)
        await self._listener.ready()
        self._consumer = await self._transport.consume(
            task_queue(self._pool), prefetch=self._concurrency
        )
        self._loops = [
            asyncio.create_task(self._consume(self._consumer), name=f"worker-{self.name}"),
            asyncio.create_task(self._control(self._listener), name=f"control-{self.name}"),
        ]
        log.info("worker started", worker=self.name, pool=self._pool, concurrency=self._concurrency)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking tasks; let running ones finish for ``grace`` seconds, then hand back."""
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        running = list(self._handlers)
        if running:
            _done, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.close()
        if self._listener is not None:
            await self._listener.aclose()
        await self._logs.close()
        log.info("worker stopped", worker=self.name)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def busy(self) -> int:
        return len(self._handlers)

    async def _consume(self, consumer: Consumer) -> None:
        async for delivery in consumer:
            handler = asyncio.create_task(self._handle(delivery))
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            async with processing(delivery):
                message = decode_task(delivery.body)
                with structlog.contextvars.bound_contextvars(
                    run_id=message.run_id,
                    task=message.task,
                    index=message.index,
                    attempt=message.attempt,
                ):
                    await self._execute(message)
        except DecodeError as exc:
            log.error("dead-lettered an undecodable task message", error=str(exc))
        except asyncio.CancelledError:
            log.info("task handed back for another worker")
            raise
        except Exception:
            log.exception("task handling failed; message requeued")

    async def _execute(self, message: TaskReady) -> None:
        key = message.key
        current = asyncio.current_task()
        assert current is not None
        self._running[key] = current
        try:
            await self._publish(
                TaskStarted(
                    run_id=message.run_id,
                    at=self._clock(),
                    task=message.task,
                    index=message.index,
                    attempt=message.attempt,
                    worker=self.name,
                )
            )
            emit = self._logs.emitter(message.run_id, message.task, message.index, message.attempt)
            started = time.monotonic()
            log.info("step started", kind=message.step.kind)
            try:
                outcome = await self._run_step(message, emit)
            except asyncio.CancelledError:
                reason = self._cancelled.pop(key, None)
                if reason is None:
                    raise  # shutdown: hand the message back
                current.uncancel()
                outcome = StepOutcome(
                    ok=False, error=f"cancelled: {reason}", reason="cancelled", retryable=False
                )
            duration = time.monotonic() - started
            if not outcome.ok:
                emit("system", f"step failed ({outcome.reason}): {outcome.error}")
            await self._logs.flush()
            await self._publish(self._outcome_event(message, outcome, duration))
            log.info(
                "step finished",
                ok=outcome.ok,
                reason=outcome.reason if not outcome.ok else None,
                duration=round(duration, 3),
            )
        finally:
            self._running.pop(key, None)
            self._cancelled.pop(key, None)

    async def _run_step(self, message: TaskReady, emit: Callable[[str, str], None]) -> StepOutcome:
        executor = self._executors.get(message.step.kind)
        if executor is None:
            return StepOutcome(
                ok=False,
                error=f"this worker cannot run {message.step.kind!r} steps",
                reason="start",
            )
        return await executor.run(message, emit)

    def _outcome_event(self, message: TaskReady, outcome: StepOutcome, duration: float) -> Event:
        common: dict[str, Any] = {
            "run_id": message.run_id,
            "at": self._clock(),
            "task": message.task,
            "index": message.index,
            "attempt": message.attempt,
            "duration": duration,
        }
        if outcome.ok:
            return TaskSucceeded(**common, result=outcome.result, outputs=outcome.outputs)
        return TaskFailed(
            **common,
            error=outcome.error,
            reason=outcome.reason,  # type: ignore[arg-type]
            retryable=outcome.retryable,
            exit_code=outcome.exit_code,
        )

    async def _publish(self, event: Event) -> None:
        await self._transport.publish(COORDINATOR_QUEUE, [encode(event)])

    async def _control(self, listener: Any) -> None:
        async for body in listener:
            try:
                command = decode_control(body)
            except DecodeError as exc:
                log.warning("ignored an undecodable control message", error=str(exc))
                continue
            for key, task in list(self._running.items()):
                run_id, task_name = key[0], key[1]
                if run_id == command.run_id and command.task in (None, task_name):
                    self._cancelled[key] = command.reason or "cancelled"
                    task.cancel()
