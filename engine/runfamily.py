"""A run with the runs under it: the child runs its workflow steps started, theirs, and
so on. Deleting a run deletes them too: a child run is part of its parent's work, and
left behind it would name a parent that is gone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from contracts.errors import Conflict, NotFound, Problem
from contracts.events import RunSubmitted
from contracts.ports import RunStore, RunSummary
from engine.runlog.index import refuse_unfinished
from engine.state.model import RunState
from engine.state.subflows import children_started, has_workflow_steps

StateOf = Callable[[str], Awaitable[RunState]]


async def run_with_children(store: RunStore, state_of: StateOf, run_id: str) -> list[RunSummary]:
    """The rows of the run and of every run under it, children before their parents (so
    a deletion cut short leaves the parent, and deleting it again finds the rest).

    Raises NotFound for a run with no row, and Conflict if the run or any run under it
    is still running: then nothing is to be deleted.
    """
    row = await store.summary(run_id)
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    refuse_unfinished(row)
    rows: list[RunSummary] = []
    for child in await _children(store, state_of, run_id):
        try:
            rows += await run_with_children(store, state_of, child)
        except Conflict:
            raise Conflict(
                [
                    Problem(
                        f"run {run_id} has a child run still running ({child}): cancel it,"
                        " or let it end, before deleting the parent"
                    )
                ]
            ) from None
        except NotFound:
            continue  # never started (its attempt failed first), or deleted already
    rows.append(row)
    return rows


async def _children(store: RunStore, state_of: StateOf, run_id: str) -> list[str]:
    # A run without workflow steps (nearly all) costs one event read, not its state.
    first = await store.read(run_id, limit=1)
    if not first or not isinstance(first[0], RunSubmitted) or not has_workflow_steps(first[0]):
        return []
    return children_started(await state_of(run_id))
