"""How the command-line entry points run their event loop.

- uvloop where it is installed: it roughly halves the cost of each socket read and
  write, which is most of what a coordinator or worker does.
- The cyclic garbage collector runs less often. A run's state is many small
  long-lived objects (one per fan-out item) and every message makes short-lived
  ones; with the default thresholds the collector rescans the young generations
  every 700 allocations, about a fifth of the engine's time in a big fan-out.
  Reference counting still frees almost everything at once.
- The coroutine's result is handed out of the loop in a box whose ``repr`` is short.
  On its way out, ``asyncio.Runner`` puts back the SIGINT handler, and the ``signal``
  module turns the handler it replaces (a partial holding the main task) into the
  text of an error it then discards: a ``repr`` of the task, with its result. For a
  command whose result is a million-item run's state, that took seconds.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

GC_THRESHOLDS = (50_000, 10, 10)


def run(coro: Coroutine[Any, Any, T]) -> T:
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:  # not built for this platform
        return run_plain(coro)
    return uvloop.run(_boxed(coro)).value


def run_plain(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, the result boxed as ``run`` boxes it: for library calls in a
    user's own process (``conveyor.testing``), which keep its loop and collector."""
    return asyncio.run(_boxed(coro)).value


class _Box(Generic[T]):
    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<result>"


async def _boxed(coro: Coroutine[Any, Any, T]) -> _Box[T]:
    return _Box(await coro)
