"""No-op steps for the benchmarks."""

from __future__ import annotations


def noop(i: int = 0) -> int:
    return i


def count(values: list[int]) -> int:
    return len(values)
