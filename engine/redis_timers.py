"""Timers in Redis, shared by every coordinator: ``engine.timers`` for one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from contracts.codec import decode_event, encode
from contracts.events import Event
from contracts.supervision import stop_loops
from engine.redis_client import redis_client
from engine.redis_retry import retrying
from engine.timers import Fire

log = structlog.get_logger("conveyor.timers")

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
            await stop_loops([self._task])
        await self._redis.aclose()
