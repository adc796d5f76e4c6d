"""The types a workflow parameter may declare, and checking a value against one."""

from __future__ import annotations

from typing import Any, Literal

ParamType = Literal["str", "int", "float", "bool", "list", "dict", "any"]


def infer_type(value: Any) -> ParamType:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "any"


def check_type(expected: ParamType, value: Any) -> Any:
    """Return ``value`` if it fits ``expected`` (ints widen to floats), else raise ValueError."""
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
        "any": True,
    }[expected]
    if not ok:
        raise ValueError(f"expected {expected}, got {type(value).__name__} {value!r}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # undecodable bytes smuggled in as surrogates
            raise ValueError(f"not UTF-8 text (at offset {exc.start})") from None
    return float(value) if expected == "float" else value
