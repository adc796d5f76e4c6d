"""Python step functions used by the tests (imported by name, like users' modules)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time

from pydantic import BaseModel

from contracts.errors import NonRetryableError


class Point(BaseModel):
    x: int
    y: int


def add(a: int, b: int) -> int:
    return a + b


async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


def point(x: int) -> Point:
    return Point(x=x, y=x + 1)


def explode(message: str) -> None:
    raise RuntimeError(message)


def refuse() -> None:
    raise NonRetryableError("bad input, do not retry")


async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


async def until_exists(path: str) -> str:
    """Runs until ``path`` exists: a step a test ends when it chooses."""
    while not os.path.exists(path):
        await asyncio.sleep(0.02)
    return "released"


def blocking_slow(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


def pid() -> int:
    return os.getpid()


def thread_name() -> str:
    return threading.current_thread().name


async def async_thread_name() -> str:
    return threading.current_thread().name


def total(values: list[int]) -> int:
    return sum(values)


async def slow_identity(value: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return value


def noted(value: int, path: str, seconds: float) -> int:
    """Sleeps, then notes in ``path`` that it ran (a step's effect, seen once per run)."""
    time.sleep(seconds)
    with open(path, "a") as ran:  # one short append: whole lines, however many write
        ran.write(f"{value}\n")
    return value


def opaque() -> object:
    """A result the wire cannot carry."""
    return object()


def sleep_after_pid(path: str, seconds: float) -> str:
    """Write this process's id to ``path``, say so, then block (not a coroutine)."""
    with open(path, "w") as out:
        out.write(str(os.getpid()))
    print("sleeping", flush=True)
    time.sleep(seconds)
    return "woke"


def chatty(n: int) -> int:
    import sys

    for i in range(n):
        print(f"line {i}")
    print("to stderr", file=sys.stderr)
    return n


def numbers(n: int) -> list[int]:
    return list(range(n))


def b64(value: str) -> str:
    import base64

    return base64.b64encode(value.encode()).decode()


def deep(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels):
        value = [value]
    return value


def stop_iteration() -> int:
    return next(iter([]))


def exits() -> None:
    raise SystemExit(3)


async def async_stop_iteration() -> int:
    raise StopIteration


async def async_chatty(n: int) -> int:
    import sys

    for i in range(n):
        print(f"async line {i}")
    sys.stderr.write("partial ")
    sys.stderr.write("error line")  # no newline: sent when the step ends
    return n


async def swallows_a_cancel(seconds: float) -> str:
    """Runs on past its first cancel (as a cancel lost inside a Redis call does)."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(seconds)
    await asyncio.sleep(seconds)
    return "finished"


async def ignores_cancels(seconds: float) -> str:
    """Never stops when cancelled: only its own time ends it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(deadline - loop.time())
    return "finished"
