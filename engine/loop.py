"""The event loop the command-line entry points run on: uvloop where it is installed.

uvloop roughly halves the cost of each socket read and write, which is most of what
a coordinator or worker does; the standard loop is the fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # not built for this platform
        return asyncio.run(coro)
    return uvloop.run(coro)
