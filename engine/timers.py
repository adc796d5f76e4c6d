"""Timers that turn 'at time T' into an event delivered to the coordinator.

A due timer publishes its event to the coordinator, so it takes the same path
(append, fold, decide) as every other event, and a duplicate firing is harmless: the
event's id is stable. Timers shared by coordinators on many machines are in Redis
(``engine.redis_timers``), apart so that embedded mode does not load the Redis client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from contracts.events import Event
from contracts.supervision import stop_loops

log = structlog.get_logger("conveyor.timers")

Fire = Callable[[Event], Awaitable[None]]


class LoopTimers:
    """Timers on the event loop; enough for one process (embedded mode, tests)."""

    def __init__(self, fire: Fire, clock: Callable[[], float]) -> None:
        self._fire = fire
        self._clock = clock
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        return None

    async def schedule(self, due: float, event: Event) -> None:
        if event.id in self._handles:
            return
        delay = max(0.0, due - self._clock())
        loop = asyncio.get_running_loop()
        self._handles[event.id] = loop.call_later(delay, self._due, event)

    def _due(self, event: Event) -> None:
        self._handles.pop(event.id, None)
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: Event) -> None:
        try:
            await self._fire(event)
        except Exception:
            log.exception("timer delivery failed", run_id=event.run_id, event_kind=event.kind)

    def pending(self) -> int:
        return len(self._handles)

    async def close(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        await stop_loops(self._tasks)
