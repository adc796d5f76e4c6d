"""Workflow functions: a function whose calls to tasks describe a workflow.

Its parameters are the workflow's; what it returns are its runs' outputs. Called
inside another workflow function it is a workflow step: a child run of its own, whose
outputs are the value (Prefect's subflow).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from contracts.spec import Workflow
from contracts.validation import workflow_from_data
from conveyor.authoring import _adapter, _Builder, _building, current_builder, templated
from conveyor.refs import Ref, task_expression
from conveyor.typing_rules import param_type


class WorkflowFunction:
    """A function whose calls to tasks describe a workflow; ``.spec`` is the result."""

    def __init__(self, fn: Callable[..., Any], name: str | None, options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__.replace("_", "-")
        self.options = options
        self._spec: Workflow | None = None
        self.gives_one = False
        """Whether the function returns one value (its runs' ``result`` output), not a
        mapping of outputs."""

    @property
    def spec(self) -> Workflow:
        if self._spec is None:
            self._spec = self.build()
        return self._spec

    def build(self) -> Workflow:
        hints = typing.get_type_hints(self.fn)
        params: dict[str, Any] = {}
        refs: dict[str, Ref[Any]] = {}
        for pname, prm in inspect.signature(self.fn).parameters.items():
            tp = hints.get(pname, Any)
            entry: dict[str, Any] = {"type": param_type(tp)}
            if prm.default is not inspect.Parameter.empty:
                # A model, dataclass, Path, enum or datetime default travels as JSON; the
                # task that takes it gets it back as its type.
                adapter = _adapter(tp, f"workflow parameter {pname!r}") if tp is not Any else None
                entry["default"] = (
                    adapter.dump_python(prm.default, mode="json") if adapter else prm.default
                )
            params[pname] = entry
            refs[pname] = Ref(f"params.{pname}", tp, None)
        builder = _Builder(self.name)
        token = _building.set(builder)
        try:
            returned = self.fn(**refs)
        finally:
            _building.reset(token)
        data: dict[str, Any] = {"name": self.name, "tasks": builder.tasks}
        if params:
            data["params"] = params
        if returned is not None:  # the run's outputs: a mapping of them, or one "result"
            self.gives_one = not isinstance(returned, dict)
            given = {"result": returned} if self.gives_one else returned
            data["outputs"] = templated(given, [])
        if self.fn.__doc__:
            data["description"] = inspect.cleandoc(self.fn.__doc__).splitlines()[0]
        data.update(self.options)
        if "triggers" in data:
            data["triggers"] = [_as_data(trigger) for trigger in data["triggers"]]
        return workflow_from_data(data, source=f"{self.fn.__module__}.{self.fn.__qualname__}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Inside another workflow function: a workflow step, whose child run's
        outputs are the value (Prefect's subflow). Elsewhere: the function itself."""
        if _building.get() is None:
            return self.fn(*args, **kwargs)
        return self._record(args, kwargs, mapped=None)

    def map(self, over: Any, /, **kwargs: Any) -> Ref[list[Any]]:
        """A child run per item of ``over`` (which feeds the first parameter not given)."""
        current_builder(f"{self.name}.map")
        return self._record((), kwargs, mapped=over)

    def _record(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, mapped: Any) -> Ref[Any]:
        builder = current_builder(self.name)
        spec = self.spec
        params = list(inspect.signature(self.fn).parameters)
        given = dict(zip(params, args, strict=False)) | kwargs
        refs: list[Ref[Any]] = []
        node: dict[str, Any] = {"name": self.name}
        if mapped is not None:
            item = next((p for p in params if p not in given), None)
            if item is None:
                raise TypeError(f"workflow {self.name!r} has no parameter left to map over")
            if isinstance(mapped, Ref):
                refs.append(mapped)
                node["items"] = mapped.expression
            else:
                node["items"] = templated(list(mapped), refs)
            given[item] = Ref("item", Any, None)
        unknown = [p for p in given if p not in params]
        if unknown:
            raise TypeError(f"workflow {self.name!r} has no parameter {unknown[0]!r}")
        node["workflow"] = {"params": templated(given, refs)}
        name = builder.add(node, refs)
        # After: the child's own templates name its tasks, not this workflow's.
        node["workflow"]["spec"] = spec.model_dump(mode="json", exclude_unset=True, by_alias=True)
        outputs = f"{task_expression(name)}.outputs.result"
        if not self.gives_one:
            return Ref(outputs, Any, name)
        if mapped is None:
            return Ref(f"{outputs}['result']", Any, name)
        return Ref(f"[run['result'] for run in {outputs}]", list[Any], name)


def _as_data(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return value


def workflow(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, **options: Any
) -> Any:
    """Make a function a workflow. Its parameters (with types and defaults) are the
    workflow's parameters. Options: timeout, description, triggers (``conveyor.triggers``)."""
    if fn is not None:
        return WorkflowFunction(fn, name, options)
    return lambda f: WorkflowFunction(f, name, options)
