"""Who waits for which run to end here: ``Coordinator.wait``'s futures.

A retried run ends once per round, so each waiter names the round after which an end
counts for it (``past_round``); an end in an earlier round leaves it waiting.
"""

from __future__ import annotations

import asyncio

from engine.state.model import RunState


class RunWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[int, asyncio.Future[RunState]]]] = {}

    def add(self, run_id: str, past_round: int) -> asyncio.Future[RunState]:
        """A future of the run's final state in a round after ``past_round``."""
        future: asyncio.Future[RunState] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(run_id, []).append((past_round, future))
        return future

    def ended(self, state: RunState) -> None:
        """The run ended in ``state.round``: its waiters for that round hear so."""
        for past_round, future in self._waiting.pop(state.run_id, []):
            if state.round <= past_round:
                self._waiting.setdefault(state.run_id, []).append((past_round, future))
            elif not future.done():
                future.set_result(state)

    def refused(self, run_id: str, error: BaseException) -> None:
        """The run will never start: every waiter hears why."""
        for _round, future in self._waiting.pop(run_id, []):
            if not future.done():
                future.set_exception(error)
