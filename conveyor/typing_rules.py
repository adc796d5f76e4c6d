"""How typed Python wiring is checked: which declared types may feed which.

A workflow function's calls are checked as they are recorded (a ``list[int]`` result
passed where ``str`` is declared is an error naming both tasks); these are the rules.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from contracts.errors import InvalidInput, Problem


def type_name(tp: Any) -> str:
    if tp is Any or tp is inspect.Parameter.empty:
        return "Any"
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def compatible(source: Any, target: Any) -> bool:
    """Whether a value of type ``source`` may be passed where ``target`` is declared."""
    if (
        source is Any
        or target is Any
        or target is inspect.Parameter.empty
        or source is inspect.Parameter.empty
    ):
        return True
    if source == target:
        return True
    t_origin, s_origin = get_origin(target), get_origin(source)
    if t_origin in (typing.Union, types.UnionType):
        return any(compatible(source, arm) for arm in get_args(target))
    if s_origin in (typing.Union, types.UnionType):
        return all(compatible(arm, target) for arm in get_args(source))
    if target is float and source is int:
        return True
    if t_origin is not None or s_origin is not None:
        if (s_origin or source) != (t_origin or target):
            return False
        s_args, t_args = get_args(source), get_args(target)
        if not s_args or not t_args:
            return True
        return len(s_args) == len(t_args) and all(
            compatible(s, t) for s, t in zip(s_args, t_args, strict=True)
        )
    if isinstance(source, type) and isinstance(target, type):
        return issubclass(source, target)
    return False


def element_type(tp: Any) -> Any:
    if get_origin(tp) in (list, tuple, typing.Sequence) and get_args(tp):
        return get_args(tp)[0]
    return Any


_PARAM_TYPES: dict[Any, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    list: "list",
    dict: "dict",
}


def param_type(tp: Any) -> str:
    return _PARAM_TYPES.get(get_origin(tp) or tp, "any")


def as_list(declared: Any) -> Any:
    """``list[X]`` for an iterable of X (a generator, an iterator, a list) declared."""
    origin = typing.get_origin(declared)
    if origin is not None and issubclass(origin, collections.abc.Iterable):
        args = typing.get_args(declared)
        if args and origin not in (dict, collections.abc.Mapping):
            return list[args[0]]  # type: ignore[valid-type]
    return declared


def mismatch(exc: ValidationError) -> str:
    """What pydantic found wrong, on one line and without its links."""
    said = "; ".join(str(error["msg"]) for error in exc.errors())
    given = exc.errors()[0].get("input") if exc.errors() else None
    return f"{said} (got {given!r:.80})"


def check_literal(adapter: TypeAdapter[Any], value: Any, expected: Any, where: str) -> None:
    """A literal argument of a task call, checked when the workflow is built."""
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        raise InvalidInput(
            [Problem(f"type mismatch: {where} expects {type_name(expected)}: {mismatch(exc)}")]
        ) from exc
