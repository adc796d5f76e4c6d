"""Embedded mode: coordinator and workers in one process over the in-memory transport.

No servers. The run log is a local SQLite file (or memory, for tests), so runs can be
inspected after the process has gone.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from contracts.errors import ConveyorError
from contracts.events import Event, TaskDispatched
from contracts.ports import ArtifactStore, RunStore, Transport
from contracts.spec import Workflow
from contracts.subflow import pools_of
from contracts.values import MAX_VALUE_BYTES
from engine.client import Client
from engine.coordinator import Coordinator, Observer, TimersFactory
from engine.runlog.memory import MemoryRunLog
from engine.state.model import RunState
from engine.transport.memory import MemoryTransport
from workers.executors import DEFAULT_MIDDLEWARE, Middleware
from workers.worker import Worker


def default_worker_count() -> int:
    """Steps that may run at once: CPU count + 4, at most 32.

    Python steps run in threads and most steps wait on I/O more than they compute, so
    a few more slots than cores (the rule of Python's own thread pools) keeps the CPU
    busy; pass ``workers`` (``--workers``) for CPU-bound scripts.
    """
    return min(32, (os.cpu_count() or 1) + 4)


WORKER_GRACE = 5.0
"""Seconds the steps still running when an embedded engine stops get to finish before
they are handed back (``conveyor server`` passes CONVEYOR_WORKER_GRACE instead)."""


class EmbeddedEngine:
    """``async with EmbeddedEngine() as engine: state = await engine.run(workflow, params)``."""

    def __init__(
        self,
        store: RunStore | None = None,
        *,
        workers: int | None = None,
        clock: Callable[[], float] = time.time,
        worker_grace: float = WORKER_GRACE,
        transport: Transport | None = None,
        timers: TimersFactory | None = None,
        shards: int = 1,
        artifacts: ArtifactStore | None = None,
        middleware: Sequence[Middleware] = DEFAULT_MIDDLEWARE,
        run_steps: bool = True,
        max_result_bytes: int = MAX_VALUE_BYTES,
        listener_marks_announced: bool = False,
    ) -> None:
        """The defaults are all in memory; pass real adapters to run the same engine on
        RabbitMQ and Redis within one process (as the behaviour tests do).

        ``listener_marks_announced``: run changes are marked announced by whoever listens
        to them in this process (a server's notifier), not once published: an in-memory
        broker that dies with the process keeps none of them."""
        self.store: RunStore = store if store is not None else MemoryRunLog()
        self.transport: Any = transport if transport is not None else MemoryTransport()
        self.artifacts = artifacts
        self._middleware = middleware
        self._max_result_bytes = max_result_bytes
        self.coordinator = Coordinator(
            self.transport,
            self.store,
            clock=clock,
            timers=timers,
            shards=shards,
            artifacts=artifacts,
            marks_announced=not listener_marks_announced,
        )
        self.client = Client(self.store, self.transport, shards=shards, clock=clock)
        """Every way of steering this engine's runs: submit, cancel, retry, resume, watch."""
        self._worker_count = workers or default_worker_count()
        self._clock = clock
        self._grace = worker_grace
        self._workers: dict[str, Worker] = {}
        """One worker per pool, with all the slots."""
        self._pools_lock = asyncio.Lock()
        self._starting: dict[str, asyncio.Task[None]] = {}
        """Pools whose worker is being started for a dispatch (one start per pool)."""
        # Runs started by any client (or taken up on resume) get their pools' workers.
        if run_steps:
            self.coordinator.observe(self._start_pool_for)
            self.coordinator.on_recover(self._start_pools_of)
        self._run_steps = run_steps

    async def start(self) -> None:
        self._failure = asyncio.get_running_loop().create_future()
        self.coordinator.supervisor.on_failure(self._failed)
        await self.transport.start()
        await self.coordinator.start()

    def _failed(self, reason: str) -> None:
        if not self._failure.done():
            self._failure.set_result(reason)

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` once a loop this engine cannot work without ends (a
        worker's intake, a shard consumer): nothing would finish its runs any more."""
        self._failure.add_done_callback(lambda failure: listener(failure.result()))

    async def wait(self, run_id: str, *, past_round: int = -1) -> RunState:
        """The run's final state once it completes here, in a round after ``past_round``.

        Raises ConveyorError if a loop this engine cannot work without ended first (a
        worker's intake, say): nothing would finish the run here, which is left as a
        run whose process died, for ``conveyor resume``.
        """
        completing = asyncio.ensure_future(self.coordinator.wait(run_id, past_round=past_round))
        await asyncio.wait({completing, self._failure}, return_when=asyncio.FIRST_COMPLETED)
        if completing.done():
            return completing.result()
        completing.cancel()
        raise ConveyorError(f"stopped: {self._failure.result()}")

    def hurry(self) -> None:
        """End a stop's grace period now: the steps still running are handed back."""
        for worker in self._workers.values():
            worker.hurry()

    async def stop(self) -> None:
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        for worker in self._workers.values():
            await worker.stop(grace=self._grace)
        self._workers.clear()
        await self.coordinator.stop()
        await self.transport.close()

    async def __aenter__(self) -> EmbeddedEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def ensure_pools(self, pools: set[str]) -> None:
        if not self._run_steps:
            return
        # One worker per pool with all the slots: its outbox then carries the results of
        # steps that finish together in one message.
        async with self._pools_lock:
            for pool in sorted(pools - set(self._workers)):
                await self._start_worker(pool)

    async def _start_worker(self, pool: str) -> None:
        name = f"embedded:{os.getpid()}:{pool}"
        worker = Worker(
            self.transport,
            self.store,
            pool=pool,
            name=name,
            concurrency=self._worker_count,
            clock=self._clock,
            artifacts=self.artifacts,
            middleware=self._middleware,
            max_result_bytes=self._max_result_bytes,
        )
        # Started in a context of its own: the caller's may have a run's or a trigger's
        # ids bound, and the worker's loops, which serve every run, would log them for
        # as long as they run.
        await asyncio.get_running_loop().create_task(worker.start(), context=contextvars.Context())
        worker.supervisor.on_failure(self._failed)
        self._workers[pool] = worker

    def _start_pool_for(self, event: Event, state: RunState) -> None:
        if isinstance(event, TaskDispatched):
            self._start_pool(state.nodes[event.task].spec.pool)

    def _start_pools_of(self, state: RunState) -> None:
        # A run taken up again may have tasks dispatched before and sent again now.
        for node in state.nodes.values():
            self._start_pool(node.spec.pool)

    def _start_pool(self, pool: str) -> None:
        if pool in self._workers or pool in self._starting:
            return
        # Its message waits in the pool's queue until the worker is up.
        starting = asyncio.get_running_loop().create_task(self.ensure_pools({pool}))
        self._starting[pool] = starting
        starting.add_done_callback(lambda _task: self._starting.pop(pool, None))

    async def submit(self, workflow: Workflow, params: dict[str, Any], **kwargs: Any) -> str:
        await self.ensure_pools(pools_of(workflow))
        return await self.client.submit(workflow, params, **kwargs)

    async def run(
        self, workflow: Workflow, params: dict[str, Any], *, observer: Observer | None = None
    ) -> RunState:
        """Run a workflow to the end and return its final state."""
        if observer is not None:
            self.coordinator.observe(observer)
        run_id = await self.submit(workflow, params)
        return await self.wait(run_id)

    def idle(self) -> bool:
        """Nothing queued, nothing being handled, no step running (in-memory transport only)."""
        return self.transport.pending() == 0 and all(
            worker.busy == 0 for worker in self._workers.values()
        )
