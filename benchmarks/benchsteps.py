"""No-op steps for the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator

from conveyor import task


def noop(i: int = 0) -> int:
    return i


async def noop_async(i: int = 0) -> int:
    """``noop`` as a coroutine function: it runs on the worker's event loop."""
    return i


def count(values: list[int]) -> int:
    return len(values)


@task(result_serializer="jsonl")
def numbers(n: int) -> Iterator[int]:
    """0 .. n-1 stored as JSON Lines, for a fan-out fed item by item."""
    yield from range(n)
