"""Timers in Redis stop when told to, however their stop lands."""

from __future__ import annotations

import asyncio
import time

from contracts.events import Event
from engine.redis_timers import RedisTimers


async def never_fired(event: Event) -> None:
    raise AssertionError(f"no timer was due: {event}")


async def test_timers_close_even_when_the_cancel_lands_inside_a_redis_call(
    redis_url: str,
) -> None:
    # Polling without a pause, the loop is nearly always inside a Redis call when its
    # cancel comes: where redis-py (through asyncio.wait_for, on Python 3.11) can
    # swallow it. Each close must still return.
    for _ in range(8):
        timers = RedisTimers(redis_url, never_fired, time.time, poll_interval=0)
        await timers.start()
        await asyncio.sleep(0.005)  # let it poll a while (not a synchronisation)
        async with asyncio.timeout(10):
            await timers.close()
