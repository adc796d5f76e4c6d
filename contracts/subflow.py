"""A task whose step is another workflow: a run of its own (a child run), whose outputs
are the task's result.

The child workflow travels inside the parent's: a file named by ``file`` is read into
``spec`` when the parent's file is loaded, so a run never reads files later, on another
machine, that may have changed since.
"""

from __future__ import annotations

from contracts.errors import Problem, did_you_mean
from contracts.spec import Task, Workflow
from contracts.yamlsource import Path, SourceMap

MAX_DEPTH = 8
"""Workflows inside workflows, at most: deeper is a mistake (a file naming itself by
another path), not a design."""


def check_subflow(task: Task, at: Path, smap: SourceMap) -> list[Problem]:
    """A workflow step's child: there (read from its file), and given the parameters it
    takes, all it needs and no secret (a secret comes from the worker's environment)."""
    step = task.workflow
    assert step is not None
    if step.spec is None:
        if step.file is None:
            return [smap.problem((*at, "workflow"), "a workflow step needs 'file' or 'spec'")]
        return [
            smap.problem(
                (*at, "workflow", "file"),
                f"{step.file!r} is not read here: a workflow given as text (to the API, in a"
                " message) holds its child workflows whole, as 'spec'",
            )
        ]
    child = step.spec
    problems: list[Problem] = []
    unused = [
        name
        for name, value in (
            ("env", task.env),
            ("workdir", task.workdir),
            ("outputs", task.outputs),
            ("artifacts", task.artifacts.out or task.artifacts.in_),
            ("cache", task.cache),
            ("timeout", task.timeout),
        )
        if value
    ]
    if unused:
        problems.append(
            smap.problem(
                (*at, unused[0]),
                f"{', '.join(map(repr, unused))} do not apply to workflow steps: a child run"
                " takes params, and its workflow sets its own timeout",
            )
        )
    for name in step.params:
        where = (*at, "workflow", "params", name)
        if name not in child.params:
            known = did_you_mean(name, child.params)
            problems.append(
                smap.problem(where, f"workflow {child.name!r} has no parameter {name!r}{known}")
            )
        elif child.params[name].is_secret:
            problems.append(
                smap.problem(where, f"{name!r} is a secret: the child's worker reads it itself")
            )
    for name, param in child.params.items():
        if param.required and name not in step.params:
            problems.append(
                smap.problem(
                    (*at, "workflow", "params"), f"workflow {child.name!r} needs parameter {name!r}"
                )
            )
    return problems


def pools_of(workflow: Workflow) -> set[str]:
    """The worker pools a run of ``workflow`` needs: its tasks', and its child runs'."""
    pools: set[str] = set()
    for task in workflow.tasks:
        if task.workflow is not None and task.workflow.spec is not None:
            pools |= pools_of(task.workflow.spec)
        elif task.workflow is None:
            pools.add(task.pool)
    return pools
