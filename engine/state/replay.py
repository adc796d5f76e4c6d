"""Rebuilding a run's state from its log, and checking that the log agrees with the engine."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from contracts.errors import ReplayDivergence
from contracts.events import Event, RunSubmitted
from engine.state.decide import decide, decided_here
from engine.state.fold import fold, new_state
from engine.state.model import RunState


def replay(events: Iterable[Event], *, strict: bool = False) -> RunState:
    """Fold a log into the run's state.

    With ``strict``, also check that every decision recorded in the log (dispatches,
    skips, retries, completion) is exactly what this engine decides at that point of
    the history, the way a workflow replayer detects non-determinism. A log whose end
    lacks decisions is not divergent: that is a run interrupted between an event and
    its consequences, which recovery completes.
    """
    stream = iter(events)
    first = next(stream, None)
    if not isinstance(first, RunSubmitted):
        raise ReplayDivergence(f"a run log must start with run_submitted, got {_describe(first)}")
    state = new_state(first)
    expected: deque[Event] = deque()
    for position, event in enumerate(stream, start=2):
        if event.run_id != state.run_id:
            raise ReplayDivergence(
                f"event #{position} belongs to run {event.run_id!r}, not {state.run_id!r}"
            )
        if strict:
            if decided_here(state, event):
                if not expected:
                    expected.extend(decide(state))
                want = expected.popleft() if expected else None
                if want != event:
                    raise ReplayDivergence(
                        f"event #{position}: log has {_describe(event)}, "
                        f"engine decides {_describe(want)}"
                    )
            elif expected:
                raise ReplayDivergence(
                    f"event #{position}: log has {_describe(event)} before the decided "
                    f"{_describe(expected[0])}"
                )
        fold(state, event)
    return state


def _describe(event: Event | None) -> str:
    if event is None:
        return "nothing"
    task = getattr(event, "task", None)
    if task is None:
        return event.kind
    return (
        f"{event.kind}({task}[{getattr(event, 'index', 0)}] attempt {getattr(event, 'attempt', 0)})"
    )
