"""When a coordinator saves a run's snapshot: at its end, and spaced while it goes on.

A snapshot spares a rebuild from folding the whole log, but costs time in proportion to
the run's size. Spacing them by the events folded so far keeps that cost per event
constant, even for a huge fan-out.
"""

from __future__ import annotations

from contracts.ports import RunLog
from engine.state import snapshot
from engine.state.model import RunState


class Snapshots:
    def __init__(self, runlog: RunLog, every: int) -> None:
        self._runlog = runlog
        self._every = every
        self._taken: dict[str, int] = {}  # events folded at the last one, by run

    def rebuilt(self, state: RunState) -> None:
        """The run was just rebuilt from its log: space the next one from here."""
        self._taken[state.run_id] = state.events_folded

    async def maybe(self, state: RunState) -> None:
        """Save one of a run going on, if enough events were folded since the last."""
        last = self._taken.get(state.run_id, 0)
        if state.finished or state.events_folded - last < max(self._every, last):
            return
        if await self._runlog.save_snapshot(state.run_id, snapshot.dump(state)):
            self._taken[state.run_id] = state.events_folded

    async def ended(self, state: RunState) -> None:
        """Save the final one (a long-lived coordinator sees millions of runs end, so the
        spacing of this one is forgotten)."""
        await self._runlog.save_snapshot(state.run_id, snapshot.dump(state))
        self._taken.pop(state.run_id, None)
