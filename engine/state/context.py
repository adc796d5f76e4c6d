"""What expressions and templates see, and rendering a task instance into a step."""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.errors import ExpressionError
from contracts.evaluation_bounds import MAX_ITEMS
from contracts.expressions import as_text, render_value
from contracts.messages import CacheSpec, ContainerSpec, StepSpec, TaskReady
from contracts.references import output_task_names
from contracts.spec import Container, Task
from contracts.validation import expression_of, upstream_names
from engine.state.items import StreamedItems
from engine.state.model import Node, RunState


def task_view(node: Node) -> dict[str, Any]:
    """What expressions see as ``tasks.<name>``."""
    return {
        "state": node.status,
        "outputs": node.outputs(),
        "attempts": node.attempts(),
        "artifacts": node.artifacts(),
    }


def upstream_context(state: RunState, node: Node) -> dict[str, Any]:
    """Names visible to a task's expressions: params, run, and its upstream tasks.

    Only the upstream tasks its expressions name are built (all of them if one uses
    ``tasks`` as a whole): the last step of a long chain, or a task after a big
    fan-out it does not read, costs nothing for them.
    """
    if node.context is None:
        named = upstream_names(node.spec)
        visible = node.ancestors if named is None else node.ancestors & named
        tasks = {name: task_view(state.nodes[name]) for name in visible}
        node.context = {
            "params": state.params,
            "run": {"id": state.run_id, "workflow": state.workflow.name},
            "tasks": tasks,
        }
    return node.context


MAX_OUTPUTS_BYTES = 1 << 20
"""Most a run gives back, as JSON: its outputs travel in its completion event, into the
run log and every announcement of it."""


def run_outputs(state: RunState) -> dict[str, Any]:
    """The workflow's ``outputs`` rendered over params, run and the tasks they name;
    raises ExpressionError if one does not render, or all of them are too big."""
    named = output_task_names(state.workflow)
    visible = state.nodes.keys() if named is None else named
    context = {
        "params": state.params,
        "run": {"id": state.run_id, "workflow": state.workflow.name},
        "tasks": {name: task_view(state.nodes[name]) for name in visible},
    }
    outputs: dict[str, Any] = {}
    for name, value in state.workflow.outputs.items():
        try:
            outputs[name] = render_value(value, context)
        except ExpressionError as exc:
            raise ExpressionError(f"outputs.{name}: {exc.message}") from None
    size = len(msgspec.json.encode(outputs))
    if size > MAX_OUTPUTS_BYTES:
        raise ExpressionError(
            f"outputs: {size:,} bytes of JSON, over the {MAX_OUTPUTS_BYTES:,} a run gives"
            " back (give back an artifact's reference for big data)"
        )
    return outputs


def instance_context(state: RunState, node: Node, index: int) -> dict[str, Any]:
    """What one instance's templates see: its task's, and its ``item`` and ``index``."""
    names = upstream_context(state, node)
    if node.spec.fans_out:
        assert node.items is not None
        names = {**names, "item": node.items[index], "index": index}
    return names


def evaluate_when(state: RunState, node: Node) -> bool:
    assert node.spec.when is not None
    return bool(expression_of(node.spec.when).evaluate(upstream_context(state, node)))


def evaluate_items(state: RunState, node: Node) -> list[Any] | StreamedItems:
    """The items of a fan-out task; raises ExpressionError if they are not a list (or
    a list stored as JSON Lines, which is counted here, not read)."""
    items = node.spec.items
    if isinstance(items, list):
        # A literal list may hold templates (a parameter among constants: [1, 2, n]).
        if any(isinstance(item, str) and "{{" in item for item in items):
            rendered: list[Any] = render_value(items, upstream_context(state, node))
            return rendered
        return items
    assert items is not None
    value = expression_of(items).evaluate(upstream_context(state, node))
    streamed = StreamedItems.of(value)
    if streamed is not None:
        # Only a list a step of this run stored: a parameter or a webhook body naming
        # another run's values (or any other file) is refused.
        if f"/runs/{state.run_id}/" not in streamed.uri:
            raise ExpressionError("items stored as jsonl must come from a step of this run")
        value = streamed
    elif isinstance(value, str):
        # An upstream result that is JSON text but was not parsed (e.g. with a trailing
        # banner) is not a list; we do not guess.
        raise ExpressionError(f"items must be a list, got a string: {value[:80]!r}")
    elif isinstance(value, range | tuple):
        value = list(value)
    if not isinstance(value, list | StreamedItems):
        raise ExpressionError(f"items must be a list, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise ExpressionError(f"{len(value):,} items; a task fans out over {MAX_ITEMS:,} at most")
    return value


def render_task(
    state: RunState, task: str, index: int, attempt: int, *, reply_to: str = ""
) -> TaskReady:
    """The message for one dispatch, with every template rendered; its outcome goes to
    the queue ``reply_to``.

    Raises ExpressionError when a template cannot be rendered for this instance.
    """
    node = state.nodes[task]
    spec = node.spec
    names = instance_context(state, node, index)
    item = names.get("item")
    step = StepSpec(
        kind=spec.kind,
        source=render_value(spec.script.source, names) if spec.script else None,
        interpreter=spec.script.interpreter if spec.script else None,
        argv=[as_text(render_value(a, names)) for a in spec.command] if spec.command else None,
        target=spec.python,
        args=render_value(spec.args, names) if spec.args else {},
        env={k: as_text(render_value(v, names)) for k, v in spec.env.items()},
        workdir=as_text(render_value(spec.workdir, names)) if spec.workdir else None,
        outputs=dict(spec.outputs),
        timeout=spec.timeout,
        container=_container(spec.container, names) if spec.container else None,
        artifacts_out=dict(spec.artifacts.out),
        artifacts_in={
            path: render_value(source, names) for path, source in spec.artifacts.in_.items()
        },
        call=_call(spec, names),
        cache=_cache(spec, names),
    )
    return TaskReady(
        run_id=state.run_id,
        task=task,
        index=index,
        attempt=attempt,
        step=step,
        item=item,
        reply_to=reply_to,
    )


def _cache(spec: Task, names: dict[str, Any]) -> CacheSpec | None:
    policy = spec.cache
    if policy is None:
        return None
    return CacheSpec(
        key=as_text(render_value(policy.key, names)) if policy.key is not None else None,
        key_fn=policy.key_fn,
        expire=policy.expire,
        refresh=policy.refresh,
    )


def _call(spec: Task, names: dict[str, Any]) -> dict[str, Any] | None:
    request = spec.http or spec.amqp
    if request is None:
        return None
    rendered: dict[str, Any] = render_value(request.model_dump(mode="json"), names)
    return rendered


def _container(container: Container, names: dict[str, Any]) -> ContainerSpec:
    return ContainerSpec(
        image=as_text(render_value(container.image, names)),
        command=[as_text(render_value(c, names)) for c in container.command]
        if container.command
        else None,
        args=[as_text(render_value(a, names)) for a in container.args],
        script=as_text(render_value(container.script, names)) if container.script else None,
        user=container.user,
        network=container.network,
        cpus=container.cpus,
        memory=container.memory,
        pull=container.pull,
    )
