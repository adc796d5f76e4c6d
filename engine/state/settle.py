"""Deciding until there is nothing left to decide."""

from __future__ import annotations

from contracts.events import Event
from engine.state.decide import decide
from engine.state.fold import fold
from engine.state.model import RunState


def settle(state: RunState) -> list[Event]:
    """Decide to a fixpoint, folding each decision in; returns every decision made.

    One pass is not enough: a decision can make the next possible (a task expanded
    can be dispatched; the last task skipped completes the run).
    """
    made: list[Event] = []
    while decisions := decide(state):
        for decision in decisions:
            fold(state, decision)
        made.extend(decisions)
    return made
