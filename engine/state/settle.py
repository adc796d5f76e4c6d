"""Deciding until there is nothing left to decide."""

from __future__ import annotations

from contracts.errors import ConveyorError
from contracts.events import Event
from engine.state.decide import decide
from engine.state.fold import fold
from engine.state.model import RunState

PASSES_PER_TASK = 8
"""Passes a task can need at most: evaluated, expanded, dispatched, released, and the
tasks after it evaluated in turn (a chain of skipped tasks takes a pass each)."""


def settle(state: RunState) -> list[Event]:
    """Decide to a fixpoint, folding each decision in; returns every decision made.

    One pass is not enough: a decision can make the next possible (a task expanded
    can be dispatched; the last task skipped completes the run). A state that never
    settles is a fault in the core; it fails the run's handling, loudly, instead of
    holding the coordinator, and every run it drives, in a loop.
    """
    made: list[Event] = []
    passes = PASSES_PER_TASK * len(state.nodes) + 16
    while decisions := decide(state):
        passes -= 1
        if passes < 0:
            again = ", ".join(sorted({event.id for event in decisions})[:5])
            raise ConveyorError(
                f"run {state.run_id}: its decisions do not settle; decided again: {again}",
                retryable=False,
            )
        for decision in decisions:
            fold(state, decision)
        made.extend(decisions)
    return made
