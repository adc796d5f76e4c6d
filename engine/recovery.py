"""What a coordinator taking up a run puts right: which task messages it sends again,
and the run's index row.

A task recorded as dispatched and not yet started may have no message on its way: the
process that recorded it may have died before sending it (outbox order: the log first).
Sending a message twice is no remedy for free: an attempt whose message is queued twice
runs twice; its outcome is recorded once, but its step's effects happen twice. So only
the messages that may be missing are sent again.
"""

from __future__ import annotations

from typing import Literal

from contracts.events import Event, TaskDispatched
from contracts.ports import RunLog
from contracts.vocabulary import TaskStatus
from engine.announce import Announcer
from engine.runlog.index import row_of
from engine.state.decide import decided_here
from engine.state.model import RunState

Resend = Literal["unsent", "all", "none"]
"""What to send again: the dispatches that may not have gone out (``unsent``); every
dispatch not started, their messages having died with the process that held its queues
(``all``: a local run's, in memory); or nothing."""
Attempt = tuple[str, int, int]
"""Task, item, attempt."""


def last_dispatches(events: list[Event], state: RunState) -> set[Attempt]:
    """The dispatches among the decisions at the end of a run's log: the only ones whose
    message may not have been published.

    A coordinator appends an incoming event with its decisions, then publishes those
    before it takes the run's next event. So a dispatch followed in the log by an
    incoming event went out; only the decisions after the last incoming one may not
    have. (A snapshot is saved once its decisions are published: an empty ``events``
    after it leaves nothing pending.) A wait's release among them is a decision too.
    """
    last: set[Attempt] = set()
    for event in reversed(events):
        if not decided_here(state, event):
            break
        if isinstance(event, TaskDispatched):
            last.add((event.task, event.index, event.attempt))
    return last


def dispatched_again(state: RunState, only: set[Attempt] | None) -> list[Event]:
    """The dispatches of the attempts not started yet (of ``only``, if given), to carry
    out once more. Given ``only``, just those attempts are looked at, not every item of
    a 1,000,000-item run."""
    if only is None:
        wanted = [
            (node.spec.name, index, inst.attempt)
            for node in state.nodes.values()
            for index, inst in enumerate(node.instances)
            if inst.status == TaskStatus.DISPATCHED
        ]
    else:
        wanted = sorted(attempt for attempt in only if _not_started(state, attempt))
    return [
        TaskDispatched(run_id=state.run_id, at=state.now, task=task, index=index, attempt=number)
        for task, index, number in wanted
    ]


def _not_started(state: RunState, attempt: Attempt) -> bool:
    """Whether ``attempt`` is its task's current one, dispatched and not started."""
    task, index, number = attempt
    node = state.nodes.get(task)
    if node is None or not 0 <= index < len(node.instances):
        return False
    inst = node.instances[index]
    return inst.status == TaskStatus.DISPATCHED and inst.attempt == number


async def index_from_log(runlog: RunLog, announcer: Announcer, state: RunState) -> None:
    """Put the run's index row right from its folded log (``RunLog.reindex``). If it was
    behind, the run changes that were to be kept owed with it are announced now: their
    process died before it announced them, and a child run's end is its parent's only
    word of it."""
    if await runlog.reindex(row_of(state)):
        await announcer.announce_unannounced(run_id=state.run_id)
