"""Parameters given to a run: from the command line (text) or from data, each checked
against its declared type; secrets only ever as the mark that names their variable."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from contracts.errors import InvalidInput, Problem
from contracts.spec import ParamType, Workflow, check_type
from contracts.vocabulary import SECRET_MARK


def coerce_param(kind: ParamType, raw: str) -> Any:
    """A parameter value typed on the command line, converted to its declared type."""
    if kind == "str":
        return raw
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"expected bool (true/false), got {raw!r}")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"expected int, got {raw!r}") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"expected float, got {raw!r}") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        if kind == "any":
            return raw
        raise ValueError(f"expected {kind} as JSON, got {raw!r}") from None
    return check_type(kind, value)


def resolve_params(
    workflow: Workflow,
    given: Mapping[str, Any],
    *,
    from_text: bool = False,
    source: str = "params",
) -> dict[str, Any]:
    """Defaults overlaid with given values, each checked against its declared type."""
    problems: list[Problem] = []
    resolved: dict[str, Any] = {}
    for name in given:
        if name not in workflow.params:
            known = ", ".join(sorted(workflow.params)) or "none"
            problems.append(Problem(f"unknown parameter {name!r} (known: {known})", path=name))
    for name, param in workflow.params.items():
        if param.is_secret:
            mark = SECRET_MARK.format(name=param.from_env)
            if name in given and given[name] != mark:
                problems.append(
                    Problem(
                        f"a secret is not given here: the worker reads it from ${param.from_env}",
                        path=name,
                    )
                )
            resolved[name] = mark
            continue
        if name in given:
            value = given[name]
            try:
                if from_text and isinstance(value, str):
                    resolved[name] = coerce_param(param.type, value)
                else:
                    resolved[name] = check_type(param.type, value)
            except ValueError as exc:
                problems.append(Problem(str(exc), path=name))
        elif param.required:
            problems.append(Problem("missing required parameter", path=name))
        else:
            resolved[name] = param.default
    if problems:
        raise InvalidInput(problems, source=source)
    return resolved
