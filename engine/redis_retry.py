"""Riding out a Redis outage: wait and try again, with capped exponential backoff.

While Redis is unreachable a caller waits here rather than failing; one that acks its
input only after the call returns therefore never loses anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger("conveyor.redis")
T = TypeVar("T")

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


async def retrying(what: str, call: Callable[[], Awaitable[T]], *, most: float = 2.0) -> T:
    """``await call()`` until Redis answers; other errors are raised at once."""
    delay = 0.05
    while True:
        try:
            return await call()
        except UNREACHABLE as exc:
            log.warning("Redis unavailable; retrying", op=what, error=str(exc), delay=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)
