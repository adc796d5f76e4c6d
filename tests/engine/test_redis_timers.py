"""Timers in Redis stop when told to, however their stop lands."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from contracts.events import Event
from engine.redis_timers import RedisTimers


async def never_fired(event: Event) -> None:
    raise AssertionError(f"no timer was due: {event}")


def telling_when_polled(timers: RedisTimers) -> asyncio.Event:
    """Set once the timers' loop has asked Redis for due timers."""
    polled = asyncio.Event()
    claim = timers._claim

    async def claiming(**kwargs: Any) -> Any:
        polled.set()
        return await claim(**kwargs)

    timers._claim = claiming
    return polled


async def test_timers_close_even_when_the_cancel_lands_inside_a_redis_call(
    redis_url: str,
) -> None:
    # Polling without a pause, the loop is nearly always inside a Redis call when its
    # cancel comes: where redis-py (through asyncio.wait_for, on Python 3.11) can
    # swallow it. Each close must still return.
    for turns in range(12):
        timers = RedisTimers(redis_url, never_fired, time.time, poll_interval=0)
        polled = telling_when_polled(timers)
        await timers.start()
        await polled.wait()  # closed while polling, not before its first poll
        for _ in range(turns):  # at each step of the Redis call in turn
            await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await timers.close()
