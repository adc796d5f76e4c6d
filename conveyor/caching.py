"""Caching options of Python tasks, in the names Prefect users know.

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(days=1))
    def fetch(url: str) -> str: ...

``cache=True`` caches on the step's inputs and code (the default key, see
``workers.cache``); ``cache_key_fn`` computes the key on the worker from the task's
parameters; ``cache_expiration`` bounds how long a result is reused; ``refresh_cache``
runs the task anyway and records the new result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

CACHE_OPTIONS = ("cache", "cache_key_fn", "cache_expiration", "refresh_cache")


def task_input_hash(context: Any, parameters: dict[str, Any]) -> str:
    """A key from the task and its parameters (Prefect's ``task_input_hash``); unlike the
    default key, it ignores changes to the task's code."""
    material = json.dumps([getattr(context, "target", None), parameters], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def cache_policy(options: dict[str, Any], task: str) -> dict[str, Any] | None:
    """The ``cache`` policy of a task's spec from its caching options (removed from
    ``options``), or None when it has none."""
    given = {name: options.pop(name) for name in CACHE_OPTIONS if name in options}
    if not given or given.get("cache") is False:
        return None
    cache = given.get("cache", True)
    policy: dict[str, Any] = {} if cache is True else dict(cache)
    if "cache_key_fn" in given:
        policy["key_fn"] = _target(given["cache_key_fn"], task)
    if "cache_expiration" in given:
        expire = given["cache_expiration"]
        policy["expire"] = expire.total_seconds() if isinstance(expire, timedelta) else expire
    if "refresh_cache" in given:
        policy["refresh"] = bool(given["refresh_cache"])
    return policy


def _target(function: Callable[..., Any], task: str) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", "")
    if not callable(function) or module in (None, "__main__") or "." in name or "<" in name:
        raise TypeError(
            f"task {task!r}: cache_key_fn must be a module-level function of an importable"
            " module (workers import it by name)"
        )
    return f"{module}:{name}"
