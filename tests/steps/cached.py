"""Cached tasks for the tests: each run of a step leaves a line in a file, so a test sees
which attempts really ran."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from conveyor import task, task_input_hash, workflow


def _ran(name: str, value: Any) -> None:
    with open(Path(os.environ["CACHED_STEPS_LOG"]), "a") as log:
        log.write(f"{name} {value}\n")


@task(cache=True)
def slow_square(x: int) -> int:
    _ran("slow_square", x)
    return x * x


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1), retries=1)
def lookup(city: str, verbose: bool = False) -> str:
    _ran("lookup", city)
    return city.upper()


def city_only(context: Any, parameters: dict[str, Any]) -> str | None:
    """Cache by city, whatever the other arguments; never for the city "live"."""
    return None if parameters["city"] == "live" else parameters["city"]


@task(cache_key_fn=city_only)
def forecast(city: str, day: int) -> str:
    _ran("forecast", f"{city}/{day}")
    return f"{city} on day {day}"


@task(cache=True, result_serializer="pickle")
def stored_set(n: int) -> set[int]:
    _ran("stored_set", n)
    return set(range(n))


@task
def size(values: set[int]) -> int:
    return len(values)


@workflow
def cached(city: str = "oslo", n: int = 3, day: int = 1) -> None:
    slow_square.map([1, 2, n])
    lookup(city)
    forecast(city, day)
    size(stored_set(n))


@workflow
def refreshed(city: str = "oslo") -> None:
    lookup.with_options(refresh_cache=True)(city)
