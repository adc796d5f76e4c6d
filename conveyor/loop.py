"""How the command-line entry points run their event loop.

- uvloop where it is installed: it roughly halves the cost of each socket read and
  write, which is most of what a coordinator or worker does.
- The cyclic garbage collector runs less often. A run's state is many small
  long-lived objects (one per fan-out item) and every message makes short-lived
  ones; with the default thresholds the collector rescans the young generations
  every 700 allocations, about a fifth of the engine's time in a big fan-out.
  Reference counting still frees almost everything at once.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

GC_THRESHOLDS = (50_000, 10, 10)


def run(coro: Coroutine[Any, Any, T]) -> T:
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:  # not built for this platform
        return asyncio.run(coro)
    return uvloop.run(coro)
