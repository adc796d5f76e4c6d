"""The runs a coordinator holds in memory.

A live run's state is the coordinator's working copy of its log. A finished run is kept
a while, so that late events for it (a result after a cancel) need no log read. A run
being rebuilt from its log is neither for a moment: its old state was dropped and the
new one is not folded yet. It is still driven here, and whoever asks whether another
process may take it up must hear so.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from engine.state.model import RunState

FINISHED_KEPT = 256
"""Finished runs kept in memory (late events for them need no log read)."""


class HeldRuns:
    def __init__(self, finished_kept: int = FINISHED_KEPT) -> None:
        self._live: dict[str, RunState] = {}
        self._finished: OrderedDict[str, RunState] = OrderedDict()
        self._finished_kept = finished_kept
        self._rebuilding: dict[str, int] = {}

    def live(self, run_id: str) -> RunState | None:
        """The state of an unfinished run held here."""
        return self._live.get(run_id)

    def finished(self, run_id: str) -> RunState | None:
        return self._finished.get(run_id)

    def get(self, run_id: str) -> RunState | None:
        """The state held here, live or finished."""
        return self._live.get(run_id) or self._finished.get(run_id)

    def driving(self, run_id: str) -> bool:
        """Whether the run is live here or being rebuilt here from its log."""
        return run_id in self._live or run_id in self._rebuilding

    def remember(self, state: RunState) -> None:
        if state.finished:
            self._finished[state.run_id] = state
            self._live.pop(state.run_id, None)
            while len(self._finished) > self._finished_kept:
                self._finished.popitem(last=False)
        else:
            self._live[state.run_id] = state
            self._finished.pop(state.run_id, None)  # a retried run is live again

    def forget(self, run_id: str) -> None:
        self._live.pop(run_id, None)
        self._finished.pop(run_id, None)

    def clear(self) -> None:
        self._live.clear()
        self._finished.clear()

    @contextmanager
    def rebuilding(self, run_id: str) -> Iterator[None]:
        """Mark the run driven here while its state is rebuilt (nested rebuilds count)."""
        self._rebuilding[run_id] = self._rebuilding.get(run_id, 0) + 1
        try:
            yield
        finally:
            left = self._rebuilding.pop(run_id) - 1
            if left:
                self._rebuilding[run_id] = left
