"""What an expression may name (``params``, ``run``, ``tasks``, ``item``, ``index``),
checked against the workflow; and the run's outputs, whose expressions see every task."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from contracts.errors import ExpressionError, Problem, did_you_mean
from contracts.expressions import ROOT_NAMES, Expression, Reference, Template, templates_in
from contracts.spec import Task, Workflow
from contracts.yamlsource import Path, SourceMap


def template_texts(path: Path, value: Any) -> Iterator[tuple[Path, str]]:
    """The strings holding ``{{ }}`` in a value, each with its path.

    A generator at module level, not a closure calling itself: such a closure is a
    reference cycle, which would keep the workflow it checks (one per submitted run)
    until the cyclic collector's next pass.
    """
    if isinstance(value, str):
        if "{{" in value:
            yield path, value
    elif isinstance(value, list):
        for k, item in enumerate(value):
            yield from template_texts((*path, k), item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from template_texts((*path, key), item)


TASK_FIELDS = frozenset({"outputs", "state", "attempts", "artifacts"})
RUN_FIELDS = frozenset({"id", "workflow"})


def strip_braces(text: str) -> str:
    """``when`` and ``items`` are expressions; accept them wrapped in ``{{ }}`` too."""
    stripped = text.strip()
    if stripped.startswith("{{") and stripped.endswith("}}"):
        return stripped[2:-2]
    return stripped


@lru_cache(maxsize=1024)
def expression_of(text: str) -> Expression:
    """The parsed ``when`` or ``items`` of a task (shared: parsed once per text)."""
    return Expression(strip_braces(text))


def check_reference(
    workflow: Workflow, task: Task | None, ref: Reference, upstream: set[str], allow_item: bool
) -> str | None:
    """Why ``ref`` may not be named by ``task`` (None: by the run's outputs), if it may not."""
    path = ref.path
    root = path[0]
    if root not in ROOT_NAMES:
        return f"unknown name {root!r} (use params, tasks, item, index or run)"
    if root in ("item", "index"):
        if task is None:
            return f"{root!r} is not defined in the run's outputs (it is per item)"
        if not task.fans_out:
            return f"{root!r} is only defined in tasks with 'items'"
        if not allow_item:
            return f"{root!r} is not defined here (it is per item)"
        return None
    if len(path) < 2:
        return None
    if root == "params":
        if path[1] not in workflow.params:
            return f"unknown parameter {path[1]!r}{did_you_mean(path[1], workflow.params)}"
    elif root == "run":
        if path[1] not in RUN_FIELDS:
            return f"unknown run field {path[1]!r} (known: id, workflow)"
    elif root == "tasks":
        name = path[1]
        if not any(t.name == name for t in workflow.tasks):
            return f"unknown task {name!r}{did_you_mean(name, (t.name for t in workflow.tasks))}"
        if task is not None and name not in upstream:
            return f"task {name!r} is not upstream of {task.name!r} (add it to depends)"
        if len(path) >= 3 and path[2] not in TASK_FIELDS:
            hint = (
                did_you_mean(path[2], TASK_FIELDS) or f" (known: {', '.join(sorted(TASK_FIELDS))})"
            )
            return f"unknown task field {path[2]!r}{hint}"
        if len(path) >= 4 and path[2] == "outputs":
            source_task = workflow.task(name)
            if path[3] != "result" and path[3] not in source_task.outputs:
                known = ["result", *source_task.outputs]
                return f"task {name!r} has no output {path[3]!r}{did_you_mean(path[3], known)}"
        if (
            len(path) >= 4
            and path[2] == "artifacts"
            and path[3] not in workflow.task(name).artifacts.out
        ):
            return f"task {name!r} has no output artifact {path[3]!r}"
    return None


def check_outputs(workflow: Workflow, smap: SourceMap) -> list[Problem]:
    """The run's outputs: templates over params, run and any task."""
    problems: list[Problem] = []
    for name, value in workflow.outputs.items():
        for path, text in template_texts(("outputs", name), value):
            try:
                template = Template(text)
            except ExpressionError as exc:
                problems.append(smap.problem(path, exc.message))
                continue
            for expr in template.expressions:
                for ref in expr.references():
                    reason = check_reference(workflow, None, ref, set(), allow_item=False)
                    if reason:
                        problems.append(smap.problem(path, f"{reason} in {expr.source!r}"))
    return problems


def tasks_named(expressions: Iterable[Expression]) -> frozenset[str] | None:
    """The tasks some expressions name (``tasks.<name>``), or None when one of them uses
    ``tasks`` as a whole or with a computed key."""
    names: set[str] = set()
    for expression in expressions:
        for ref in expression.references():
            if ref.path[0] != "tasks":
                continue
            if len(ref.path) < 2:
                return None
            names.add(ref.path[1])
    return frozenset(names)


def output_task_names(workflow: Workflow) -> frozenset[str] | None:
    """The tasks the run's outputs name, or None when one of them uses them all."""
    return tasks_named(e for found in templates_in(workflow.outputs) for e in found.expressions)
