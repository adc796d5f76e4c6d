"""Typed Python authoring: tasks are decorated functions, a workflow wires them by calling.

    from conveyor import task, workflow

    @task(retry=2)
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    @workflow
    def squares(n: int = 5) -> None:
        total(square.map(numbers(n)))

Calling tasks inside a workflow function records nodes instead of running them; the
result is the same ``Workflow`` spec a YAML file gives (``squares.spec``), so there is
one engine. Wiring is type-checked as it is recorded: passing a ``list[int]`` result
where a task expects ``str`` is an error naming both tasks. Outside a workflow a task
is an ordinary function whose inputs and output are validated by pydantic; that is
how workers run it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

from contracts.errors import ExpressionError, InvalidInput, NonRetryableError, Problem
from contracts.expressions import Template, templates_in
from contracts.values import STREAMED_FORMAT
from conveyor import typing_rules as rules
from conveyor.refs import ORDERING, Ref, task_expression
from conveyor.task_options import apply_options, check_options
from conveyor.typing_rules import as_list, compatible, element_type, type_name
from conveyor.values import check_format, decoded, encode

T = TypeVar("T")
_building: contextvars.ContextVar[_Builder | None] = contextvars.ContextVar(
    "conveyor_building", default=None
)


@dataclass
class _Builder:
    workflow: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)

    def unique(self, base: str) -> str:
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def add(self, node: dict[str, Any], refs: list[Ref[Any]], after: Iterable[str] = ()) -> str:
        node["name"] = self.unique(node["name"])
        depends = {r.producer for r in refs if r.producer} | set(after)
        depends |= _referenced_tasks(node)
        depends.discard(node["name"])
        if depends:
            node["depends"] = sorted(depends)
        self.tasks.append(node)
        return str(node["name"])


@typing.overload
def _adapter(tp: Any, what: str) -> TypeAdapter[Any]: ...
@typing.overload
def _adapter(tp: Any, what: str, *, required: bool) -> TypeAdapter[Any] | None: ...
def _adapter(tp: Any, what: str, *, required: bool = True) -> TypeAdapter[Any] | None:
    """How values of ``tp`` travel between steps (as JSON); a type that cannot is refused
    here, naming the task, not deep in pydantic (unless not ``required``)."""
    try:
        return TypeAdapter(tp)
    except (PydanticSchemaGenerationError, TypeError) as exc:
        if not required:
            return None
        name = getattr(tp, "__name__", repr(tp))
        raise TypeError(
            f"{what}: values of type {name} cannot travel between steps as JSON. Store it"
            ' in the artifact store instead: @task(result_serializer="parquet") for a'
            ' DataFrame, "pickle" for any object (between tasks of your own code); or use'
            " plain data, a pydantic model or a dataclass"
            " (docs/workflow-language.md, Python values the wire cannot carry)"
        ) from exc


def _order_tasks(before: list[Ref[Any]], after: Ref[Any]) -> None:
    builder = current_builder(">>")
    if after.producer is None or any(ref.producer is None for ref in before):
        raise TypeError("only task outputs can be ordered with >>")
    node = next(n for n in builder.tasks if n["name"] == after.producer)
    names = set(node.get("depends", [])) | {str(ref.producer) for ref in before}
    names.discard(after.producer)
    node["depends"] = sorted(names)


ORDERING[0] = _order_tasks


def templated(value: Any, refs: list[Ref[Any]]) -> Any:
    """Refs anywhere inside a list, tuple or dict become templates, and dependencies."""
    if isinstance(value, Ref):
        refs.append(value)
        return str(value)
    if isinstance(value, dict):
        return {k: templated(v, refs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [templated(v, refs) for v in value]
    return value


def _referenced_tasks(value: Any) -> set[str]:
    """Tasks the templates inside ``value`` name (``{{ tasks.a.outputs.x }}``), read
    from their syntax trees. A template that does not parse names nothing here:
    validating the finished workflow reports it with its place."""
    names: set[str] = set()
    for found in _templates(value):
        for expression in found.expressions:
            names.update(
                ref.path[1]
                for ref in expression.references()
                if ref.path[0] == "tasks" and len(ref.path) > 1
            )
    return names


def _templates(value: Any) -> list[Template]:
    try:
        return list(templates_in(value))
    except ExpressionError:
        return []


def current_builder(what: str) -> _Builder:
    builder = _building.get()
    if builder is None:
        raise RuntimeError(f"{what} can only be used inside a @workflow function")
    return builder


# -- tasks ---------------------------------------------------------------------------


class TaskFunction(Generic[T]):
    """A function that is a task: a node when called in a workflow, validated code otherwise."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name: str = options.pop("name", None) or fn.__name__
        self.result_format: str | None = (
            check_format(options.pop("result_serializer"), self.name)
            if "result_serializer" in options
            else None
        )
        self.options = check_options(options, self.name)
        hints = typing.get_type_hints(fn, include_extras=False)
        self.signature = inspect.signature(fn)
        self.__signature__ = self.signature
        self.param_types = {p: hints.get(p, Any) for p in self.signature.parameters}
        self.return_type = hints.get("return", Any)
        if self.result_format == STREAMED_FORMAT:
            self.return_type = as_list(self.return_type)  # its items, one per line
        self.is_async = inspect.iscoroutinefunction(fn)
        # A parameter of a type JSON cannot carry (a DataFrame) takes a value another
        # task stored with a result_serializer; it is passed as it is decoded.
        self._adapters = {
            p: adapter
            for p, t in self.param_types.items()
            if t is not Any and (adapter := _adapter(t, "", required=False)) is not None
        }
        self._out = (
            _adapter(
                self.return_type,
                f"task {self.name!r} result",
                required=self.result_format in (None, "json"),
            )
            if self.return_type not in (Any, None, type(None))
            else None
        )

    @property
    def target(self) -> str:
        module = self.fn.__module__
        if self.fn.__qualname__ != self.fn.__name__ or module == "__main__":
            said = f"task {self.name!r} must be a module-level function of an importable module"
            raise InvalidInput([Problem(said)])
        return f"{module}:{self.fn.__name__}"

    # Running (on a worker, or directly in a unit test).
    def _validated_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(**kwargs)
        try:
            return {
                k: self._adapters[k].validate_python(decoded(v))
                if k in self._adapters
                else decoded(v)
                for k, v in bound.arguments.items()
            }
        except ValidationError as exc:
            said = rules.mismatch(exc)
            raise NonRetryableError(f"task {self.name!r}: invalid arguments: {said}") from exc

    def _dump(self, value: Any) -> Any:
        if self.result_format is not None:
            return encode(value, self.result_format, self._out)
        return (
            self._out.dump_python(self._out.validate_python(value), mode="json")
            if self._out
            else value
        )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        bound = self.signature.bind(*args, **kwargs)
        values = self._validated_args(dict(bound.arguments))
        if self.is_async:

            async def go() -> Any:
                return self._dump(await self.fn(**values))

            return go()
        return self._dump(self.fn(**values))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _building.get() is None:
            return self.run(*args, **kwargs)
        return self._record(args, kwargs, mapped=None, when=None)

    # Building.
    def map(self, over: Any, /, **kwargs: Any) -> Ref[list[Any]]:
        """Fan out: one instance per item of ``over`` (a list, or a task's list output).

        ``over`` feeds the task's first parameter; other parameters come as keywords.
        """
        current_builder("map")
        return self._record((), kwargs, mapped=over, when=None)

    def with_options(self, **options: Any) -> _Configured:
        """This task with per-call options: ``when``, ``name``, ``retry``, ``timeout``,
        ``depends`` (refs or task names that must finish first), ..."""
        if "result_serializer" in options:
            raise TypeError(
                f"task {self.name!r}: result_serializer is set where the task is declared"
                " (@task(result_serializer=...)): workers run the function as declared"
            )
        return _Configured(self, check_options(options, self.name))

    def _record(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        mapped: Any,
        when: str | None,
        overrides: dict[str, Any] | None = None,
    ) -> Ref[Any]:
        builder = current_builder(self.name)
        params = list(self.signature.parameters)
        assigned = dict(zip(params, args, strict=False))
        assigned.update(kwargs)
        options = {**self.options, **(overrides or {})}
        name = options.pop("name", None) or self.name
        refs: list[Ref[Any]] = []
        after: list[str] = []
        for upstream in options.pop("depends", None) or []:
            if isinstance(upstream, Ref) and upstream.producer:
                refs.append(upstream)
            elif isinstance(upstream, str):
                after.append(upstream)
            else:
                raise TypeError(f"task {name!r}: depends takes task outputs or task names")
        node: dict[str, Any] = {"name": name, "python": self.target}
        item_param: str | None = None
        if mapped is not None:
            if not params:
                raise TypeError(f"task {self.name!r} takes no parameters to map over")
            item_param = next(p for p in params if p not in assigned)
            if isinstance(mapped, Ref):
                refs.append(mapped)
                element = element_type(mapped.type)
                self._check(item_param, element, mapped, name, mapped_over=True)
                node["items"] = mapped.expression
            else:
                node["items"] = templated(list(mapped), refs)
            assigned[item_param] = Ref("item", Any, None)
        args_spec: dict[str, Any] = {}
        for pname, value in assigned.items():
            if pname not in self.signature.parameters:
                raise TypeError(f"task {self.name!r} has no parameter {pname!r}")
            if isinstance(value, Ref):
                if pname != item_param:
                    self._check(pname, value.type, value, name)
                    refs.append(value)
                args_spec[pname] = str(value)
            else:
                # Outputs inside a list, tuple or dict are dependencies too.
                held, args_spec[pname] = len(refs), templated(value, refs)
                if len(refs) == held and pname in self._adapters:
                    where = f"task {name!r} parameter {pname!r}"
                    rules.check_literal(
                        self._adapters[pname], value, self.param_types[pname], where
                    )
        missing = [
            p
            for p, prm in self.signature.parameters.items()
            if p not in assigned and prm.default is inspect.Parameter.empty
        ]
        if missing:
            raise InvalidInput(
                [Problem(f"task {name!r} is missing arguments: {', '.join(missing)}")]
            )
        if args_spec:
            node["args"] = args_spec
        apply_options(node, options, when)
        recorded = builder.add(node, refs, after)
        result_type = list[self.return_type] if mapped is not None else self.return_type  # type: ignore[name-defined]
        return Ref(f"{task_expression(recorded)}.outputs.result", result_type, recorded)

    def _check(
        self, param: str, source_type: Any, source: Ref[Any], name: str, mapped_over: bool = False
    ) -> None:
        expected = self.param_types.get(param, Any)
        if compatible(source_type, expected):
            return
        origin = (
            f"task {source.producer!r}"
            if source.producer
            else f"parameter {source.expression.split('.')[-1]!r}"
        )
        what = "items of " if mapped_over else ""
        raise InvalidInput(
            [
                Problem(
                    f"type mismatch: task {name!r} parameter {param!r} expects "
                    f"{type_name(expected)}, but {what}{origin} gives {type_name(source_type)}"
                )
            ]
        )


@dataclass
class _Configured:
    task: TaskFunction[Any]
    options: dict[str, Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Ref[Any]:
        return self.task._record(args, kwargs, mapped=None, when=None, overrides=self.options)

    def map(self, over: Any, /, **kwargs: Any) -> Ref[list[Any]]:
        return self.task._record((), kwargs, mapped=over, when=None, overrides=self.options)


def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Make a function a task. Options: retry, timeout, pool, parallelism, when,
    continue_on_failure, trigger_rule, name."""
    if fn is not None:
        return TaskFunction(fn, dict(options))
    return lambda f: TaskFunction(f, dict(options))


# -- workflows -------------------------------------------------------------------------
