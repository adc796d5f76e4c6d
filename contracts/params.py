"""Parameters given to a run: from the command line (text) or from data, each checked
against its declared type; secrets only ever as the mark that names their variable."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from contracts.errors import InvalidInput, Problem
from contracts.paramtypes import ParamType, check_type
from contracts.spec import Workflow
from contracts.vocabulary import SECRET_MARK, SECRET_MARKS
from contracts.yamlsource import SourceMap, load_yaml


def secret_variable(value: Any) -> str | None:
    """The variable a secret parameter's mark names; None for any other value."""
    found = SECRET_MARKS.fullmatch(value) if isinstance(value, str) else None
    return found.group(1) if found else None


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


def checked_params(
    workflow: Workflow,
    given: Mapping[str, Any],
    *,
    from_text: bool | Collection[str] = False,
    source: str = "params",
    lines: SourceMap | None = None,
) -> dict[str, Any]:
    """Given values, each a declared parameter checked against its type, without the
    defaults. ``from_text``: the values (all, or those named) are command-line text, to
    be converted; ``lines``: where each name stands in the document it came from."""
    problems: list[Problem] = []
    checked: dict[str, Any] = {}
    where = lines or SourceMap()
    text = given.keys() if from_text is True else from_text or ()
    for name, value in given.items():
        param = workflow.params.get(name) if isinstance(name, str) else None
        if param is None:
            known = ", ".join(sorted(workflow.params)) or "none"
            problems.append(where.problem((name,), f"unknown parameter {name!r} (known: {known})"))
        elif param.is_secret:
            if value != SECRET_MARK.format(name=param.from_env):
                problems.append(
                    where.problem(
                        (name,),
                        f"a secret is not given here: the worker reads it from ${param.from_env}",
                    )
                )
            checked[name] = value
        else:
            try:
                if name in text and isinstance(value, str):
                    checked[name] = coerce_param(param.type, value)
                else:
                    checked[name] = check_type(param.type, value)
            except ValueError as exc:
                problems.append(where.problem((name,), str(exc)))
    if problems:
        raise InvalidInput(problems, source=source)
    return checked


def resolve_params(
    workflow: Workflow,
    given: Mapping[str, Any],
    *,
    from_text: bool | Collection[str] = False,
    source: str = "params",
) -> dict[str, Any]:
    """Defaults overlaid with given values, each checked against its declared type
    (``from_text`` as for ``checked_params``)."""
    problems: list[Problem] = []
    try:
        checked = checked_params(workflow, given, from_text=from_text, source=source)
    except InvalidInput as exc:
        problems += exc.problems
        checked = {}
    resolved: dict[str, Any] = {}
    for name, param in workflow.params.items():
        if param.is_secret:
            resolved[name] = SECRET_MARK.format(name=param.from_env)
        elif name in checked:
            resolved[name] = checked[name]
        elif name in given:
            continue  # refused above
        elif param.required:
            problems.append(Problem("missing required parameter", path=name))
        else:
            resolved[name] = param.default
    if problems:
        raise InvalidInput(problems, source=source)
    return resolved


def params_from_yaml(workflow: Workflow, text: str, source: str) -> dict[str, Any]:
    """Values from a parameters file (YAML or JSON: a mapping of names to values), each
    checked against its declared type; problems name their line."""
    data, lines = load_yaml(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(
            [Problem("a parameters file is a mapping of names to values", line=1)], source=source
        )
    return checked_params(workflow, data, source=source, lines=lines)
