"""Timers that turn 'at time T' into an event delivered to the coordinator.

A due timer publishes its event to the coordinator, so it takes the same path
(append, fold, decide) as every other event, and a duplicate firing is harmless: the
event's id is stable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from contracts.codec import decode_event, encode
from contracts.events import Event
from engine.redis_client import redis_client
from engine.redis_retry import retrying

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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# Claim due timers: push their score forward by a lease, so a coordinator that dies
# between claiming and publishing does not lose them; they come due again.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
end
return due
"""


class RedisTimers:
    """Timers in a Redis sorted set, shared by every coordinator; they survive restarts."""

    KEY = "cv:timers"

    def __init__(
        self,
        url: str,
        fire: Fire,
        clock: Callable[[], float],
        *,
        poll_interval: float = 0.05,
        claim_lease: float = 30.0,
    ) -> None:
        self._redis: Any = redis_client(url, socket_timeout=5, socket_connect_timeout=2)
        self._claim = self._redis.register_script(_CLAIM)
        self._fire = fire
        self._clock = clock
        self._poll = poll_interval
        self._lease = claim_lease
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-timers")

    async def schedule(self, due: float, event: Event) -> None:
        await retrying("timer", lambda: self._redis.zadd(self.KEY, {encode(event): due}, nx=True))

    async def _run(self) -> None:
        while True:
            try:
                now = self._clock()
                members = await self._claim(keys=[self.KEY], args=[now, now + self._lease, 500])
                for member in members:
                    await self._fire(decode_event(member))
                    await self._redis.zrem(self.KEY, member)
                if not members:
                    await asyncio.sleep(self._poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("timer poll failed; retrying", error=str(exc))
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._redis.aclose()
