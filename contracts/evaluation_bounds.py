"""What one evaluation of an expression may cost, and the counting that holds it there.

An expression runs in the coordinator, between the events of every run it holds: a
slow one holds them all. So one evaluation builds at most MAX_ITEMS values, and its
operators and functions go through at most MAX_WORK items between them; ``install``
puts the counting into an evaluator, ``start`` begins an evaluation's count.
"""

from __future__ import annotations

import ast
import functools
import threading
from collections.abc import Callable
from typing import Any

import simpleeval

MAX_ITEMS = 1_000_000
"""The longest sequence an expression may build, and the most items a fan-out may have."""

# simpleeval's own guard (10,000) would stop ``[i for i in range(100_000)]``; its
# limits are module settings meant to be adjusted.
simpleeval.MAX_COMPREHENSION_LENGTH = MAX_ITEMS


MAX_POWER_BITS = 100_000
"""The largest integer a power may make (``4000000**4000000`` would take the coordinator
25 s to compute)."""

MAX_WORK = 200_000_000
"""The most items one evaluation may read or make through its operators and functions
(``r in params.big`` reads all of ``big``, ``str(x)`` makes its text): a few seconds of
the coordinator's time at most, as many as a comprehension of MAX_ITEMS turns takes,
where building at most MAX_ITEMS values alone would not bound it (a million turns,
each reading a long parameter)."""

_budget = threading.local()


def work(cells: int) -> None:
    spent = getattr(_budget, "work", 0) + cells
    if spent > MAX_WORK:
        raise ValueError(f"the expression reads or makes over {MAX_WORK:,} items")
    _budget.work = spent


_SIZED = (str, bytes, list, tuple, dict, set, frozenset)


def _size(value: Any) -> int:
    """What an operation that goes through ``value`` costs (0 for a scalar; a ``range``
    answers ``in`` without going through it)."""
    return len(value) if isinstance(value, _SIZED) else 0


def worked(operation: Callable[..., Any], cost: Callable[..., int]) -> Callable[..., Any]:
    def charged(*args: Any, **kwargs: Any) -> Any:
        result = operation(*args, **kwargs)
        work(cost(result, *args))
        return result

    return charged


def reads_first(result: Any, *args: Any) -> int:
    return _size(args[0]) if args else 0


def makes(result: Any, *args: Any) -> int:
    if isinstance(result, list | tuple | dict):  # kept, like what list() builds
        charge(len(result))
    return _size(result)


def _compares(result: Any, left: Any, right: Any) -> int:
    return min(_size(left), _size(right))


def _searches(result: Any, item: Any, container: Any) -> int:
    # A set or a mapping finds it at once; a list or a text is read through.
    return 1 if isinstance(container, set | frozenset | dict) else _size(container)


def charge(cells: int) -> None:
    """Count values built by one evaluation; refuse past MAX_ITEMS in all (so nested
    comprehensions of lists cannot build a billion values between them)."""
    spent = getattr(_budget, "spent", 0) + cells
    if spent > MAX_ITEMS:
        raise ValueError(f"the expression builds over {MAX_ITEMS:,} values")
    _budget.spent = spent


def bounded_range(*args: int) -> range:
    """``range`` that refuses to describe more than MAX_ITEMS numbers (``list(range(10**12))``
    would otherwise exhaust the coordinator's memory)."""
    numbers = range(*args)
    try:
        length = len(numbers)
    except OverflowError:  # longer than a C integer can count
        raise ValueError(f"range of over {MAX_ITEMS:,} numbers") from None
    if length > MAX_ITEMS:
        raise ValueError(f"range of {length:,} numbers; at most {MAX_ITEMS:,}")
    return numbers


def bounded_sorted(values: Any, **kwargs: Any) -> list[Any]:
    out = sorted(values, **kwargs)
    charge(len(out))
    return out


def power(base: Any, exponent: Any) -> Any:
    bounded = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1
    if bounded and exponent * abs(base).bit_length() > MAX_POWER_BITS:
        raise ValueError(f"{base}**{exponent} is too large a number")
    return base**exponent


def _subscript(read: Callable[[ast.Subscript], Any], node: ast.Subscript) -> Any:
    """``x[i]``, with a slice's copy counted like any sequence an expression makes."""
    value = read(node)
    if isinstance(node.slice, ast.Slice):
        work(makes(value))
    return value


def _display(make: Callable[[ast.AST], Any], node: ast.AST) -> Any:
    """``[...]``, ``(...)``, ``{...}``: one that unpacks another (``[*x]``, ``{**d}``)
    copies it, counted like any sequence an expression makes."""
    value = make(node)
    if isinstance(node, ast.Dict):
        unpacks = None in node.keys
    else:
        unpacks = any(isinstance(e, ast.Starred) for e in getattr(node, "elts", ()))
    if unpacks:
        work(makes(value))
    return value


def counted(make: Callable[[Any], Any]) -> Callable[..., Any]:
    def build(values: Any = ()) -> Any:
        out = make(values)
        charge(len(out))
        return out

    return build


bounded_list = counted(list)


def install(evaluator: Any) -> None:
    """Count what ``evaluator``'s operators, slices, displays and builders go through
    and make."""
    evaluator.operators[ast.Pow] = power
    costs: dict[type[ast.AST], Callable[..., int]] = {
        **dict.fromkeys((ast.Add, ast.Mult, ast.Mod, ast.BitOr, ast.Sub), makes),
        **dict.fromkeys((ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE), _compares),
        **dict.fromkeys((ast.In, ast.NotIn), _searches),
    }
    for node, cost in costs.items():
        evaluator.operators[node] = worked(evaluator.operators[node], cost)
    nodes = evaluator.nodes
    nodes[ast.Subscript] = functools.partial(_subscript, nodes[ast.Subscript])
    for display in (ast.List, ast.Tuple, ast.Set, ast.Dict):
        if display in nodes:
            nodes[display] = functools.partial(_display, nodes[display])
    # (simpleeval adds its own list, tuple, set and dict builders; count theirs too.)
    evaluator.functions.update(
        list=bounded_list, tuple=counted(tuple), set=counted(set), dict=counted(dict)
    )


def start() -> None:
    """Begin one evaluation's count."""
    _budget.spent = _budget.work = 0
