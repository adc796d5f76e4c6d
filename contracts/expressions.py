"""The safe expression language used by ``when``, ``items`` and ``{{ ... }}`` templates.

Expressions are a small Python-like language evaluated by ``simpleeval``: literals,
arithmetic, comparisons, ``and``/``or``/``not``, ``x if c else y``, comprehensions,
attribute and index access, and a fixed set of functions. No ``eval``, no imports,
no dunder access. References (``params.x``, ``tasks.a.outputs.result``, ``item``)
are extracted statically so a workflow can be checked before anything runs.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from simpleeval import (
    DISALLOW_FUNCTIONS,
    EvalWithCompoundTypes,
    FeatureNotAvailable,
    InvalidExpression,
)

from contracts import evaluation_bounds as bounds
from contracts.errors import ExpressionError


def _read_key(evaluator: EvalWithCompoundTypes, node: ast.Attribute) -> Any:
    """``a.b`` reads key ``b`` of mapping ``a``, and nothing else: no methods, so an
    expression cannot change the run's state it reads (``sorted(x, key=params.pop)``)."""
    value = evaluator._eval(node.value)
    if isinstance(value, Mapping):
        if node.attr in value:
            return value[node.attr]
        raise KeyError(node.attr)
    raise ValueError(f"'.{node.attr}' reads keys of mappings only, not of {type(value).__name__}")


def _from_json(text: str) -> Any:
    return json.loads(text)


def _to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "int": int,
    "float": float,
    "str": bounds.worked(str, bounds.makes),
    "bool": bool,
    "abs": abs,
    "min": bounds.worked(min, bounds.reads_first),
    "max": bounds.worked(max, bounds.reads_first),
    "sum": bounds.worked(sum, bounds.reads_first),
    "round": round,
    "sorted": bounds.worked(bounds.bounded_sorted, bounds.makes),
    "any": bounds.worked(any, bounds.reads_first),
    "all": bounds.worked(all, bounds.reads_first),
    "range": bounds.bounded_range,
    # Marks a value spliced into code on purpose (contracts.code_contexts); the value
    # itself is unchanged.
    "raw": lambda value: value,
    "list": bounds.bounded_list,
    "from_json": bounds.worked(_from_json, bounds.reads_first),
    "to_json": bounds.worked(_to_json, bounds.makes),
}

ROOT_NAMES = frozenset({"params", "tasks", "item", "index", "run"})

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_WHOLE_TEMPLATE = re.compile(r"^\s*\{\{(.*?)\}\}\s*$", re.DOTALL)


@dataclass(frozen=True)
class Reference:
    """A dotted path an expression reads, e.g. ``("tasks", "a", "outputs", "result")``."""

    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.path)


class _Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    def _check_disallowed_items(self, item: Any) -> None:
        """simpleeval looks through every value each node gives, into containers too, for
        a module or a forbidden function: a 20,000-item parameter read in a
        comprehension was walked again on each turn (``i in params.big`` over a
        thousand items took 4 s). The names here are JSON data and the functions a fixed
        list, checked when the evaluator is made, so no container can hold either; a
        value itself is still checked."""
        if isinstance(item, types.ModuleType):
            raise FeatureNotAvailable("Sorry, modules are not allowed")
        if callable(item) and item in DISALLOW_FUNCTIONS:
            raise FeatureNotAvailable("This function is forbidden")


_local = threading.local()


def _evaluator(names: dict[str, Any]) -> EvalWithCompoundTypes:
    """One evaluator per thread, reused: building one costs more than a small evaluation."""
    evaluator: EvalWithCompoundTypes | None = getattr(_local, "evaluator", None)
    if evaluator is None:
        evaluator = _local.evaluator = _Evaluator(functions=FUNCTIONS)
        bounds.install(evaluator)
        evaluator.nodes[ast.Attribute] = functools.partial(_read_key, evaluator)
    evaluator.names = names
    bounds.start()
    return evaluator


class Expression:
    """A parsed expression; parse once, evaluate many times."""

    __slots__ = ("_body", "_name", "_tree", "source")

    def __init__(self, source: str) -> None:
        self.source = source.strip()
        if not self.source:
            raise ExpressionError("empty expression")
        self._tree = _parse(self.source)
        # simpleeval walks an expression statement, not an ast.Expression module.
        self._body = ast.Expr(value=self._tree.body)
        # A bare name (``item``) is looked up directly: the commonest template there is.
        body = self._tree.body
        self._name = body.id if isinstance(body, ast.Name) else None

    def references(self) -> list[Reference]:
        return list(_references_in(self.source))

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        if self._name is not None and self._name in names:
            return names[self._name]
        evaluator = _evaluator(names if isinstance(names, dict) else dict(names))
        try:
            return evaluator.eval(self.source, previously_parsed=self._body)
        except InvalidExpression as exc:
            raise ExpressionError(f"{self.source!r}: {exc}") from exc
        except (
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            ZeroDivisionError,
            OverflowError,
            MemoryError,
            RecursionError,
            AttributeError,
        ) as exc:
            raise ExpressionError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


@lru_cache(maxsize=4096)
def _parse(source: str) -> ast.Expression:
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {source!r}: {exc.msg}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError(f"invalid expression {source!r}: private attribute {node.attr!r}")
        if isinstance(node, ast.Lambda | ast.NamedExpr | ast.Await | ast.Yield | ast.YieldFrom):
            raise ExpressionError(
                f"invalid expression {source!r}: {type(node).__name__} is not allowed"
            )
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ExpressionError(
                    f"invalid expression {source!r}: only the built-in functions can be called"
                )
            if node.func.id not in FUNCTIONS:
                known = ", ".join(sorted(FUNCTIONS))
                raise ExpressionError(
                    f"invalid expression {source!r}: unknown function {node.func.id!r} "
                    f"(known: {known})"
                )
    return tree


@lru_cache(maxsize=4096)
def _references_in(source: str) -> tuple[Reference, ...]:
    # Checking a workflow and rendering its outputs ask again for every run of it.
    return tuple(_references(_parse(source)))


def _references(tree: ast.AST) -> Iterator[Reference]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            for target in ast.walk(node.target):
                if isinstance(target, ast.Name):
                    bound.add(target.id)
    seen_names: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Subscript):
            path, root = _dotted(node)
            if root is not None and id(root) not in seen_names:
                # Only the outermost access chain yields a reference; inner ones are prefixes.
                seen_names.add(id(root))
                if root.id not in bound:
                    yield Reference(path)
        elif isinstance(node, ast.Name) and id(node) not in seen_names:
            if node.id in bound or node.id in FUNCTIONS or node.id in ("True", "False", "None"):
                continue
            if isinstance(getattr(node, "ctx", None), ast.Store):
                continue
            seen_names.add(id(node))
            yield Reference((node.id,))


def _dotted(node: ast.AST) -> tuple[tuple[str, ...], ast.Name | None]:
    parts: list[str] = []
    current = node
    while True:
        if isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        elif isinstance(current, ast.Subscript):
            key = current.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                parts.append(key.value)
            else:
                parts.clear()  # dynamic index: the path is known only up to here
            current = current.value
        elif isinstance(current, ast.Name):
            parts.append(current.id)
            return tuple(reversed(parts)), current
        else:
            return (), None


class Template:
    """A string that may contain ``{{ expression }}`` parts.

    A string that is exactly one ``{{ ... }}`` renders to the expression's value with
    its type kept (a list stays a list); otherwise each part is rendered as text
    (strings as-is, everything else as JSON) and spliced in.
    """

    __slots__ = ("_parts", "_whole", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        whole = _WHOLE_TEMPLATE.match(source)
        self._whole = Expression(whole.group(1)) if whole and "{{" not in whole.group(1) else None
        self._parts = [Expression(m.group(1)) for m in _TEMPLATE.finditer(source)]

    @property
    def expressions(self) -> list[Expression]:
        return self._parts

    def render(self, names: Mapping[str, Any]) -> Any:
        if self._whole is not None:
            return self._whole.evaluate(names)
        if not self._parts:
            return self.source
        values = iter([expr.evaluate(names) for expr in self._parts])
        return _TEMPLATE.sub(lambda _m: as_text(next(values)), self.source)


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def templates_in(value: Any) -> Iterator[Template]:
    """Every template inside a nested structure of strings, lists and dicts."""
    if isinstance(value, str):
        if "{{" in value:
            yield template(value)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from templates_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from templates_in(item)


@lru_cache(maxsize=4096)
def template(source: str) -> Template:
    """A parsed template, shared: the same strings are rendered for every item of a fan-out."""
    return Template(source)


def render_value(value: Any, names: Mapping[str, Any]) -> Any:
    """Render every template inside a nested structure, keeping its shape."""
    if isinstance(value, str):
        return template(value).render(names) if "{{" in value else value
    if isinstance(value, list | tuple):
        return [render_value(item, names) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, names) for key, item in value.items()}
    return value
