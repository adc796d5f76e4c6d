"""Turning user input into a checked ``Workflow`` and checked parameters.

Every problem is collected (not just the first) and reported with the file, the path
in the document and, where the YAML tells us, the line.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path as FsPath
from typing import Any

import msgspec
from pydantic import ValidationError

from contracts.code_contexts import splices, unsafe_message
from contracts.errors import (
    ConveyorError,
    ExpressionError,
    InvalidInput,
    Problem,
    did_you_mean,
)
from contracts.expressions import Expression, Template, templates_in
from contracts.fields import fields_at
from contracts.graph import ancestors, find_cycle
from contracts.params import coerce_param, resolve_params
from contracts.references import (
    check_outputs,
    check_reference,
    expression_of,
    strip_braces,
    tasks_named,
    template_texts,
)
from contracts.spec import Task, Workflow
from contracts.subflow import MAX_DEPTH, check_subflow
from contracts.submitted import WORKFLOWS_KEPT
from contracts.triggers import check_triggers
from contracts.yamlsource import Path, SourceMap, format_path, load_yaml

MAX_WORKFLOW_BYTES = 4 << 20
"""Largest workflow file read by default (``CONVEYOR_MAX_WORKFLOW_BYTES``)."""


def load_workflow(
    path: str | FsPath,
    *,
    max_bytes: int = MAX_WORKFLOW_BYTES,
    within: tuple[FsPath, ...] = (),
    read: list[FsPath] | None = None,
) -> Workflow:
    """Read, parse and check a workflow file, and the files its workflow steps name;
    refused before parsing when over ``max_bytes``. ``within``: the files that name
    this one, outermost first. ``read`` gets every file it tries to read, whether it
    could or not (what a watcher of the workflow watches)."""
    file = FsPath(path).resolve()
    if read is not None:
        read.append(file)
    text = read_document(path, "workflow", max_bytes=max_bytes)
    data, smap = load_yaml(text, str(path))
    for at, step in _workflow_steps(data):
        name = step.get("file")
        if not isinstance(name, str) or "spec" in step:
            continue
        child = (file.parent / name).resolve()
        chain = [*within, file, child]
        if child in chain[:-1] or len(chain) > MAX_DEPTH:
            why = "names itself" if child in chain[:-1] else f"nests over {MAX_DEPTH} deep"
            trail = " -> ".join(f.name for f in chain)
            raise InvalidInput([smap.problem((*at, "file"), f"{why}: {trail}")], source=str(path))
        try:
            spec = load_workflow(child, max_bytes=max_bytes, within=(*within, file), read=read)
        except InvalidInput as exc:
            raise InvalidInput(
                [smap.problem((*at, "file"), exc.message)], source=str(path)
            ) from None
        step["spec"] = spec.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return workflow_from_data(data, smap, str(path))


def _workflow_steps(data: Any) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The ``workflow`` mappings of a workflow document's tasks, with their paths."""
    tasks = data.get("tasks") if isinstance(data, dict) else None
    for i, task in enumerate(tasks if isinstance(tasks, list) else []):
        step = task.get("workflow") if isinstance(task, dict) else None
        if isinstance(step, dict):
            yield ("tasks", i, "workflow"), step


def read_document(path: str | FsPath, what: str, *, max_bytes: int = MAX_WORKFLOW_BYTES) -> str:
    """The UTF-8 text of an input file (``what`` it is: workflow, parameters), refused
    unread past ``max_bytes``."""
    file = FsPath(path)
    try:
        with file.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInput(
            [Problem(f"cannot read {what} file: {exc.strerror}")], source=str(file)
        ) from None
    return document_text(raw, what, max_bytes=max_bytes, source=str(file))


def document_text(raw: bytes, what: str, *, max_bytes: int, source: str) -> str:
    """``raw`` (read up to one byte past ``max_bytes``) as text, or why it is not."""
    if len(raw) > max_bytes:
        raise InvalidInput(
            [
                Problem(
                    f"{what} file is over the {max_bytes:,}-byte limit"
                    " (raise it with CONVEYOR_MAX_WORKFLOW_BYTES)"
                )
            ],
            source=source,
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            [
                Problem(
                    f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start}",
                    line=line,
                )
            ],
            source=source,
        ) from None


def parse_workflow(text: str, source: str | None = None) -> Workflow:
    data, smap = load_yaml(text, source)
    return workflow_from_data(data, smap, source)


def workflow_from_data(
    data: Any, smap: SourceMap | None = None, source: str | None = None
) -> Workflow:
    smap = smap or SourceMap()
    if not isinstance(data, dict):
        raise InvalidInput(
            [Problem("a workflow must be a mapping with 'name' and 'tasks'", line=1)], source=source
        )
    try:
        workflow = Workflow.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(
            [_problem(data, err, smap) for err in exc.errors()],
            source=source,
        ) from None
    problems = check_workflow(workflow, smap)
    if problems:
        raise InvalidInput(problems, source=source)
    return workflow


def check_submission(run_id: str, workflow: dict[str, Any], params: dict[str, Any]) -> None:
    """A run's workflow and parameters checked again by whoever takes the run up: a
    message on the broker is not proof that a client validated it. Not retryable."""
    try:
        try:
            checked = _checked(msgspec.json.encode(workflow))
        except InvalidInput:
            checked = workflow_from_data(workflow, source=f"run {run_id}")  # raises, naming it
        resolve_params(checked, params, source="params")
    except InvalidInput as exc:
        raise ConveyorError(f"submission refused: {exc.message}", retryable=False) from exc


@lru_cache(maxsize=WORKFLOWS_KEPT)
def _checked(workflow: bytes) -> Workflow:
    # A workflow submitted again (a trigger's, a workflow step's children) is checked once.
    return workflow_from_data(msgspec.json.decode(workflow))


def _loc(data: Any, loc: tuple[Any, ...]) -> Path:
    # pydantic adds the union member or validator name to locations (e.g. 'list[any]',
    # 'function-before[...]'); keep only parts that exist in the document.
    out: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif (
            isinstance(node, dict) and isinstance(part, str) and "[" not in part and "-" not in part
        ):
            out.append(part)  # a missing or unknown field: name it
            node = None
    return tuple(out)


def _problem(data: Any, err: Any, smap: SourceMap) -> Problem:
    path = _loc(data, err["loc"])
    if err["type"] == "extra_forbidden" and path and isinstance(path[-1], str):
        return smap.problem(path, "unknown field" + did_you_mean(path[-1], fields_at(path[:-1])))
    return smap.problem(path, _message(err))


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def check_workflow(workflow: Workflow, smap: SourceMap | None = None) -> list[Problem]:
    """Graph and reference checks that the field models cannot do alone."""
    smap = smap or SourceMap()
    problems: list[Problem] = []
    index: dict[str, int] = {}
    for i, task in enumerate(workflow.tasks):
        if task.name in index:
            problems.append(
                smap.problem(
                    ("tasks", i, "name"),
                    f"duplicate task name {task.name!r} (also tasks[{index[task.name]}])",
                )
            )
        else:
            index[task.name] = i
    deps: dict[str, list[str]] = {}
    for i, task in enumerate(workflow.tasks):
        for j, dep in enumerate(task.depends):
            if dep not in index:
                problems.append(
                    smap.problem(
                        ("tasks", i, "depends", j),
                        f"unknown dependency {dep!r}{did_you_mean(dep, index)}",
                    )
                )
            elif dep == task.name:
                problems.append(
                    smap.problem(("tasks", i, "depends", j), "a task cannot depend on itself")
                )
        deps.setdefault(task.name, [d for d in task.depends if d in index and d != task.name])
    cycle = find_cycle(deps)
    if cycle:
        first = index[cycle[0]]
        problems.append(
            smap.problem(("tasks", first, "depends"), "dependency cycle: " + " -> ".join(cycle))
        )
    secrets = {name for name, param in workflow.params.items() if param.is_secret}
    problems.extend(
        check_triggers(
            workflow.triggers,
            known=set(workflow.params),
            required={name for name, param in workflow.params.items() if param.required},
            secret=secrets,
            smap=smap,
        )
    )
    problems.extend(check_outputs(workflow, smap))
    for i, task in enumerate(workflow.tasks):
        if index[task.name] != i:
            continue  # a second task of a name (reported): its references would mislead
        problems.extend(_check_task_expressions(workflow, task, ("tasks", i), deps, smap))
        problems.extend(_check_secret_uses(task, ("tasks", i), secrets, smap))
        if task.workflow is not None:
            problems.extend(check_subflow(task, ("tasks", i), smap))
        problems.extend(
            smap.problem(splice.path, unsafe_message(splice))
            for splice in splices(task, ("tasks", i))
            if not splice.raw
        )
    return problems


def _check_secret_uses(task: Task, at: Path, secrets: set[str], smap: SourceMap) -> list[Problem]:
    """A secret reaches a step only as an environment variable, where nothing records it."""
    if not secrets:
        return []
    used: set[str] = set()
    try:
        for expression in _expressions(task, env=False):
            for ref in expression.references():
                if ref.path[0] == "params":
                    # ``params`` as a whole would carry every secret along.
                    used |= {ref.path[1]} & secrets if len(ref.path) > 1 else secrets
    except ExpressionError:
        return []  # reported with its place by the expression checks
    return [
        smap.problem(
            at,
            f"secret parameter {name!r} can only reach a step through env"
            f" (env: {{{name.upper()}: '{{{{ params.{name} }}}}'}})",
        )
        for name in sorted(used)
    ]


def raw_splices(workflow: Workflow) -> list[str]:
    """Where the workflow splices values into code on purpose (``raw()``), for review."""
    return [
        f"{format_path(splice.path)}: {splice.expression}"
        for i, task in enumerate(workflow.tasks)
        for splice in splices(task, ("tasks", i))
        if splice.raw
    ]


def _check_task_expressions(
    workflow: Workflow, task: Task, at: Path, deps: dict[str, list[str]], smap: SourceMap
) -> list[Problem]:
    problems: list[Problem] = []
    upstream = ancestors(deps, task.name)

    def check(path: Path, expressions: list[Expression], allow_item: bool) -> None:
        for expr in expressions:
            for ref in expr.references():
                reason = check_reference(workflow, task, ref, upstream, allow_item)
                if reason:
                    problems.append(smap.problem(path, f"{reason} in {expr.source!r}"))

    def templates(at: Path, value: Any) -> None:
        for path, text in template_texts(at, value):
            try:
                template = Template(text)
            except ExpressionError as exc:
                problems.append(smap.problem(path, exc.message))
                continue
            check(path, template.expressions, True)

    if task.when is not None:
        try:
            check((*at, "when"), [Expression(strip_braces(task.when))], allow_item=False)
        except ExpressionError as exc:
            problems.append(smap.problem((*at, "when"), exc.message))
    if isinstance(task.items, str):
        try:
            check((*at, "items"), [Expression(strip_braces(task.items))], allow_item=False)
        except ExpressionError as exc:
            problems.append(smap.problem((*at, "items"), exc.message))
    if task.script is not None:
        templates((*at, "script", "source"), task.script.source)
    templates((*at, "command"), task.command)
    templates((*at, "args"), task.args)
    templates((*at, "env"), task.env)
    templates((*at, "workdir"), task.workdir)
    if task.workflow is not None:
        templates((*at, "workflow", "params"), task.workflow.params)
    if task.container is not None:
        templates((*at, "container", "image"), task.container.image)
        templates((*at, "container", "command"), task.container.command)
        templates((*at, "container", "args"), task.container.args)
        templates((*at, "container", "script"), task.container.script)
    for kind, request in (("http", task.http), ("amqp", task.amqp)):
        if request is not None:
            templates((*at, kind), request.model_dump(mode="json"))
    for path, source in task.artifacts.in_.items():
        if "{{" not in source and "://" not in source:
            problems.append(
                smap.problem(
                    (*at, "artifacts", "in", path),
                    "an input artifact is a template ({{ tasks.a.artifacts.x }}) or a URL",
                )
            )
        templates((*at, "artifacts", "in", path), source)
    return problems


def upstream_names(task: Task) -> frozenset[str] | None:
    """The upstream tasks a task's expressions name (``tasks.<name>``), or None when one
    of them uses ``tasks`` as a whole or with a computed key."""
    return tasks_named(_expressions(task))


def _expressions(task: Task, *, env: bool = True) -> Iterator[Expression]:
    """Every expression of a (valid) task: ``when``, ``items`` and all templates (those in
    ``env`` only if asked)."""
    if task.when is not None:
        yield expression_of(task.when)
    if isinstance(task.items, str):
        yield expression_of(task.items)
    values: list[Any] = [task.command, task.args, task.workdir, task.artifacts.in_]
    if task.workflow is not None:
        values.append(task.workflow.params)
    if env:
        values.append(task.env)
    if task.script is not None:
        values.append(task.script.source)
    if task.container is not None:
        c = task.container
        values += [c.image, c.command, c.args, c.script]
    for request in (task.http, task.amqp):
        if request is not None:
            values.append(request.model_dump(mode="json"))
    for found in templates_in(values):
        yield from found.expressions


__all__ = [
    "check_workflow",
    "coerce_param",
    "expression_of",
    "format_path",
    "load_workflow",
    "parse_workflow",
    "resolve_params",
    "workflow_from_data",
]
