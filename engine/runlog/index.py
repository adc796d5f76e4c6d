"""The run index, derived from events as they are appended (it can always be rebuilt)."""

from __future__ import annotations

import msgspec

from contracts.errors import Conflict, Problem
from contracts.events import Event, RunCompleted, RunRetryRequested, RunSubmitted
from contracts.ports import RunSummary
from contracts.vocabulary import CHILD_TRIGGER
from engine.state.model import RunState


def opens_log(event: Event) -> bool:
    """Whether ``event`` may be the first of a run's log: its submission only. Anything
    else for a run with no log (a late result of a deleted run) is not appended."""
    return isinstance(event, RunSubmitted)


def refuse_unfinished(row: RunSummary) -> None:
    """A run is deleted only once it has ended: raise Conflict for one still running."""
    if row.state == "running":
        raise Conflict(
            [
                Problem(
                    f"run {row.run_id} is still running: cancel it, or let it end,"
                    " before deleting it"
                )
            ]
        )


def owes_announcement(event: Event) -> bool:
    """Whether appending ``event`` owes the world an announcement that must survive the
    coordinator (``RunLog.unannounced``): the run state changes, not the task ones."""
    return isinstance(event, RunSubmitted | RunCompleted)


def row_of(state: RunState) -> RunSummary:
    """The index row a run's folded log gives: what ``index_update`` made of its events."""
    return RunSummary(
        run_id=state.run_id,
        workflow=state.workflow.name,
        state=str(state.status),
        submitted_at=state.submitted_at,
        finished_at=state.finished_at,
        reason=state.reason,
        trigger=state.trigger,
        shard=state.shard,
    )


def index_update(current: RunSummary | None, event: Event) -> RunSummary | None:
    """The new index row for ``event``, or None when the event does not change it."""
    if isinstance(event, RunSubmitted):
        if current is not None:
            return None
        name = str(event.workflow.get("name", "?"))
        return RunSummary(
            run_id=event.run_id,
            workflow=name,
            state="running",
            submitted_at=event.at,
            trigger=event.trigger,
            shard=event.shard,
        )
    if isinstance(event, RunRetryRequested) and current is not None and current.state != "running":
        return msgspec.structs.replace(current, state="running", finished_at=None, reason="")
    if isinstance(event, RunCompleted) and current is not None and current.state == "running":
        return msgspec.structs.replace(
            current, state=event.state, finished_at=event.at, reason=event.reason
        )
    return None


def parent_of(row: RunSummary) -> str | None:
    """The run whose workflow step started this one; None for a top-level run."""
    started_by_a_run = row.trigger.startswith(CHILD_TRIGGER)
    return row.trigger.removeprefix(CHILD_TRIGGER) if started_by_a_run else None


def is_child(row: RunSummary) -> bool:
    """Whether another run's workflow step started this one."""
    return parent_of(row) is not None


def matches(
    row: RunSummary,
    *,
    state: str | None,
    workflow: str | None,
    trigger: str | None,
    since: float | None,
    until: float | None,
    top_level: bool = False,
) -> bool:
    """Whether an index row passes a run list's filters (``trigger`` may be a kind)."""
    return (
        (state is None or row.state == state)
        and not (top_level and is_child(row))
        and (workflow is None or row.workflow == workflow)
        and (trigger is None or row.trigger == trigger or row.trigger.startswith(trigger + ":"))
        and (since is None or row.submitted_at >= since)
        and (until is None or row.submitted_at <= until)
    )
