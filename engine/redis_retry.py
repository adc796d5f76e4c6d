"""Riding out a Redis outage: wait and try again, with capped exponential backoff.

While Redis is unreachable a caller waits here rather than failing; one that acks its
input only after the call returns therefore never loses anything.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contracts.errors import ConveyorError

log = structlog.get_logger("conveyor.redis")
T = TypeVar("T")
P = ParamSpec("P")

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


def outage_is_retryable(
    call: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A store method whose callers must answer now (a webhook's sender is waiting):
    Redis not answering is a retryable ``ConveyorError`` (a 503 to the sender, a retry
    for a loop) rather than redis-py's own exception."""

    @functools.wraps(call)
    async def answering(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await call(*args, **kwargs)
        except UNREACHABLE as exc:
            raise ConveyorError(
                f"Redis did not answer ({call.__name__}): {exc}", retryable=True
            ) from exc

    return answering
