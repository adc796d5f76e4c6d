"""Run-state snapshots, so rebuilding a long run does not fold its whole history.

A snapshot is plain data (JSON via msgspec). Restoring one and folding the events
after it gives the same state as folding the whole log; a test holds us to that.
"""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import Any

import msgspec

from contracts.graph import ancestors, downstream
from contracts.spec import Workflow
from contracts.vocabulary import FailureKind, RunStatus, TaskStatus
from engine.state.items import StreamedItems
from engine.state.model import Instance, Node, RunState

SNAPSHOT_VERSION = 1
_INSTANCE_FIELDS = [f.name for f in fields(Instance)]
_instance_values = attrgetter(*_INSTANCE_FIELDS)
"""An instance's fields as a tuple, in one call: a snapshot of a big fan-out holds many."""
_NODE_FIELDS = [
    "deps_left",
    "status",
    "items",
    "next_index",
    "retry_ready",
    "inflight",
    "done",
    "failed",
    "started_at",
    "finished_at",
    "error",
]
_STATE_FIELDS = [
    "run_id",
    "params",
    "submitted_at",
    "now",
    "status",
    "finished_at",
    "reason",
    "open_nodes",
    "cancel_reason",
    "timed_out",
    "events_folded",
    "round",
    "deadline_base",
    "signals",
    "shard",
]


def dump(state: RunState) -> bytes:
    data: dict[str, Any] = {name: getattr(state, name) for name in _STATE_FIELDS}
    data["v"] = SNAPSHOT_VERSION
    data["workflow"] = state.workflow.model_dump(mode="json", exclude_unset=True, by_alias=True)
    data["evaluable"] = list(state.evaluable)
    data["dispatchable"] = list(state.dispatchable)
    data["retry_due"] = [list(key) for key in state.retry_due]
    data["signal_due"] = [list(key) for key in state.signal_due]
    data["nodes"] = {
        name: {
            **{f: getattr(node, f) for f in _NODE_FIELDS},
            "items": node.items.stored() if isinstance(node.items, StreamedItems) else node.items,
            "instances": list(map(_instance_values, node.instances)),
        }
        for name, node in state.nodes.items()
    }
    return msgspec.json.encode(data)


def load(blob: bytes) -> RunState:
    data = msgspec.json.decode(blob)
    if data.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"unknown snapshot version {data.get('v')!r}")
    workflow = Workflow.model_validate(data["workflow"])
    deps = {t.name: list(t.depends) for t in workflow.tasks}
    nodes: dict[str, Node] = {}
    for task in workflow.tasks:
        saved = data["nodes"][task.name]
        node = Node(
            spec=task, deps_left=saved["deps_left"], ancestors=frozenset(ancestors(deps, task.name))
        )
        for f in _NODE_FIELDS:
            setattr(node, f, saved[f])
        node.status = TaskStatus(node.status)
        streamed = StreamedItems.of(node.items)
        if streamed is not None:  # items stored as JSON Lines: saved as their reference
            node.items = streamed
        node.instances = [_instance(values) for values in saved["instances"]]
        nodes[task.name] = node
    state = RunState(
        run_id=data["run_id"],
        workflow=workflow,
        params=data["params"],
        submitted_at=data["submitted_at"],
        now=data["now"],
        downstream=downstream(deps),
        nodes=nodes,
    )
    for f in _STATE_FIELDS:
        if f in data:  # (snapshots made before a field existed lack it)
            setattr(state, f, data[f])
    state.status = RunStatus(state.status)
    state.evaluable = dict.fromkeys(data["evaluable"])
    state.dispatchable = dict.fromkeys(data["dispatchable"])
    state.retry_due = {(task, index): None for task, index in data["retry_due"]}
    state.signal_due = {(task, index): None for task, index in data.get("signal_due", [])}
    return state


def _instance(values: list[Any]) -> Instance:
    # Statuses and failure kinds come back as text; the state holds them as their types.
    inst = Instance(*values)
    inst.status = TaskStatus(inst.status)
    if inst.reason is not None:
        inst.reason = FailureKind(inst.reason)
    return inst
