"""What the API and the UI show of a run: small, bounded documents.

A fan-out is one task with counts per state, however many items it has; its items are
read a page at a time. Nothing here grows with the number of items but the counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

from contracts.ports import RunSummary
from contracts.vocabulary import TaskStatus
from conveyor.report import params_data
from engine.runlog.index import parent_of
from engine.state.model import Instance, Node, RunState

PREVIEW_CHARS = 2000
"""Longest result shown inline; the rest is in the event log."""


def summary_shape(row: RunSummary, *, stalled: bool) -> dict[str, Any]:
    """A row of the run list; ``stalled``: running, and no process drives it."""
    return {
        "run_id": row.run_id,
        "workflow": row.workflow,
        "state": row.state,
        "stalled": stalled,
        "submitted_at": row.submitted_at,
        "finished_at": row.finished_at,
        "reason": row.reason,
        "trigger": row.trigger,
        "parent_run": parent_of(row),
    }


def _preview(value: Any) -> Any:
    text = repr(value) if not isinstance(value, str) else value
    if len(text) <= PREVIEW_CHARS:
        return value
    return text[:PREVIEW_CHARS] + f"... ({len(text):,} characters)"


def task_shape(node: Node) -> dict[str, Any]:
    spec = node.spec
    shape: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "depends": list(spec.depends),
        "state": str(node.status),
        "started_at": node.started_at,
        "finished_at": node.finished_at,
        "error": node.error,
        "fans_out": spec.fans_out,
    }
    if spec.signal is not None:
        shape["waits_for"] = spec.signal
    if spec.fans_out:
        shape["items"] = {"count": len(node.instances), "by_state": status_counts(node)}
    else:
        inst = node.instances[0] if node.instances else None
        shape["attempt"] = inst.attempt if inst else 0
        if inst is not None:
            shape["started_at"] = inst.started_at or node.started_at
            shape["finished_at"] = inst.finished_at or node.finished_at
            shape["outputs"] = {name: _preview(value) for name, value in node.outputs().items()}
            shape["artifacts"] = dict(inst.artifacts or {})
    return shape


def status_counts(node: Node) -> dict[str, int]:
    """How many of the node's instances are in each state, by name."""
    return dict(sorted((str(status), count) for status, count in node.status_counts().items()))


def item_shape(index: int, inst: Instance) -> dict[str, Any]:
    return {
        "index": index,
        "state": str(inst.status),
        "attempt": inst.attempt,
        "started_at": inst.started_at,
        "finished_at": inst.finished_at,
        "result": _preview(inst.result),
        "error": inst.error,
        "artifacts": dict(inst.artifacts or {}),
    }


def run_shape(state: RunState, *, stalled: bool) -> dict[str, Any]:
    return {
        "run_id": state.run_id,
        "workflow": state.workflow.name,
        "state": str(state.status),
        "stalled": stalled,
        "submitted_at": state.submitted_at,
        "finished_at": state.finished_at,
        "reason": state.reason,
        "params": params_data(state.params),
        "trigger": state.trigger,
        "round": state.round,
        "tasks": [task_shape(node) for node in state.nodes.values()],
        "outputs": state.outputs,
    }


def items_page(
    node: Node, *, state: str | None, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of a task's items (of one state); the offset of the next page: its first
    item's number, or None when no item (of that state) follows."""
    found = _in_state(node, state, range(offset, len(node.instances)))
    page = [item_shape(index, node.instances[index]) for index in islice(found, limit)]
    # Looked for, not assumed: a "next" that opens on no items is no use.
    return page, next(found, None)


def previous_offset(node: Node, *, state: str | None, offset: int, limit: int) -> int | None:
    """Where the page before the one at ``offset`` starts (of one state): ``limit`` items
    of that state back, or the first; None on the first page."""
    # An offset past the last item (typed into a URL) leads back to the last page.
    last = min(offset, len(node.instances)) - 1
    back = list(islice(_in_state(node, state, range(last, -1, -1)), limit))
    if not back:
        return None
    return back[-1] if len(back) == limit else 0


def _in_state(node: Node, state: str | None, indexes: range) -> Iterator[int]:
    """The items of ``indexes`` in ``state`` (any state if None), in that order.

    A filter over a 1,000,000-item task may pass over every item, so each is compared
    with the state asked for as the enum it is stored as, not turned into text first."""
    if state is None:
        return iter(indexes)
    try:
        wanted = TaskStatus(state)
    except ValueError:
        return iter(())  # a state no item can be in
    if wanted not in node.status_counts():
        return iter(())  # none is (the counts are kept): no pass over a million items
    instances = node.instances
    return (index for index in indexes if instances[index].status == wanted)
