"""The options a task takes in the Python API, checked when the task is declared.

Names other tools use for the same thing (Prefect's ``retries``,
``retry_delay_seconds``, ``cache_key_fn``, ``cache_expiration``) are read as
Conveyor's; an unknown option is refused at once with the name it probably meant.
"""

from __future__ import annotations

import difflib
from typing import Any

from conveyor.caching import CACHE_OPTIONS, cache_policy

_OPTION_KEYS = {
    "retry",
    "timeout",
    "pool",
    "parallelism",
    "continue_on_failure",
    "trigger_rule",
    "when",
    "env",
    "workdir",
    "branch",
    "cache",
}


_ALIASES = {"retries": "retry", "retry_delay_seconds": "retry"}
"""Names other tools use (Prefect's), read as ours."""


def check_options(options: dict[str, Any], task: str) -> dict[str, Any]:
    """Options as Conveyor reads them; an unknown one is refused with the likely name."""
    known = (
        _OPTION_KEYS
        | {"outputs", "artifacts", "depends", "name"}
        | set(_ALIASES)
        | set(CACHE_OPTIONS)
    )
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"task {task!r}: unknown option {key!r}{hint}; options: {', '.join(sorted(known))}"
            )
    checked = {k: v for k, v in options.items() if k not in _ALIASES}
    cache = cache_policy(checked, task)
    if cache is not None:
        checked["cache"] = cache
    if "retries" in options or "retry_delay_seconds" in options:
        retry: dict[str, Any] = {"limit": int(options.get("retries", 0))}
        delays = options.get("retry_delay_seconds")
        if delays is not None:
            retry["delays"] = list(delays) if isinstance(delays, list | tuple) else [delays]
        checked["retry"] = retry
    return checked


def apply_options(node: dict[str, Any], options: dict[str, Any], when: str | None) -> None:
    unknown = set(options) - _OPTION_KEYS - {"outputs", "artifacts"}
    if unknown:
        raise TypeError(f"unknown task options: {', '.join(sorted(unknown))}")
    for key, value in options.items():
        if key == "retry" and isinstance(value, int):
            node["retry"] = {"limit": value}
        elif key == "when" and hasattr(value, "producer"):  # a task's output (a Ref)
            node["when"] = value.expression
        elif key == "env" and isinstance(value, dict):
            # Outputs and parameters reach a step's code as variables, never spliced in.
            node["env"] = {name: str(v) for name, v in value.items()}
        elif value is not None:
            node[key] = value
    if when is not None:
        node["when"] = when
