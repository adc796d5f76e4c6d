"""Who may report on a task: the outcomes a coordinator takes from the wire, by sender.

Signing says which role sent a message, and ``contracts.signing.SENT_BY`` which kinds
each role sends. That is not enough: a worker sends successes, but only of the steps
a worker runs. A wait step is released by its signal, which the coordinator decides
on; a workflow step's attempt is a child run, whose coordinator reports its start and
end. Without this check a worker's key (or, unsigned, any publisher) could approve a
wait or make up a child run's result.
"""

from __future__ import annotations

from contracts.events import Event, TaskFailed, TaskStarted, TaskSucceeded
from contracts.signing import Role
from engine.state.model import RunState


def refusal(state: RunState, event: Event, sender: Role | None) -> str | None:
    """Why ``event``, off the wire from ``sender`` (None: unsigned, as in one process),
    is not the run's to take; None if it is."""
    if not isinstance(event, TaskStarted | TaskSucceeded | TaskFailed):
        return None
    node = state.nodes.get(event.task)
    if node is None:
        return None  # about no task of the run: the fold ignores it
    spec = node.spec
    if spec.wait is not None and not isinstance(event, TaskFailed):
        # Its start is its dispatch and its success the release of its signal, both
        # decided here; only its timeout comes back on the wire (a timer's).
        return f"{event.kind} of wait step {event.task!r}: only its signal releases it"
    if sender is Role.WORKER and not spec.runs_on_a_worker:
        return f"a worker may not report on step {event.task!r}: no worker runs it"
    if sender is Role.COORDINATOR and spec.runs_on_a_worker and not isinstance(event, TaskFailed):
        # A coordinator fails a worker's attempt (its lease ran out), never runs it.
        return f"a coordinator may not send {event.kind} of step {event.task!r}: a worker runs it"
    return None
