"""Cancelling a start at each point where it waits, and checking what it left."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import psutil
import pytest

T = TypeVar("T")


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def cancel_at_each_turn(
    start: Callable[[], Coroutine[Any, Any, T]],
    finish: Callable[[T], Awaitable[None]],
    most: int = 50,
) -> None:
    """Start, and cancel after 0, 1, 2, ... loop turns until a start ends before its
    cancel (then ``finish`` what it started). After each cancel, no child process and no
    descriptor more than before is left. Fails if the cancel never came in the middle of
    a start, or if none ended within ``most`` turns."""
    before = open_descriptors()
    children = psutil.Process().children()  # the suite's servers
    for turns in range(most):
        starting = asyncio.create_task(start())
        for _ in range(turns):
            await asyncio.sleep(0)  # one loop turn: how far the start gets before the cancel
        if starting.done():  # started before the cancel: every point was tried
            await finish(starting.result())
            break
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert psutil.Process().children() == children, f"cancelled after {turns} turns"
        assert open_descriptors() == before, f"cancelled after {turns} turns"
    else:
        pytest.fail(f"the start did not end within {most} loop turns")
    assert turns >= 2  # the cancel came at least once in the middle of the start
    assert open_descriptors() == before
