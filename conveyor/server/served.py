"""The embedded server's client: the runs of its home that another process drives are
steered through that process, never from here.

A ``conveyor run`` (or ``resume``, ``retry``) process drives its run while the server
runs on the same home. Two engines driving one run would both run its steps, so the
server's API and UI do not act on such a run: a cancel interrupts the process that
drives it (as ``conveyor cancel`` does), anything else is refused with the process's
pid. A resume of a run the server drives itself is refused too: its steps are running
here, and resuming would start them again.

A run that neither drives (its ``conveyor run`` was killed while the server ran) is
shown stalled, and a resume through the server takes it up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from contracts.errors import Conflict, Problem
from contracts.ports import ArtifactStore, RunSummary
from conveyor.local import interrupt_holder
from conveyor.locks import RunLock, forget_run
from conveyor.server.shapes import summary_shape
from engine.client import Client
from engine.state.model import RunState
from engine.triggers.firing import CANCELLED_BY_CLI


class ServedClient(Client):
    def __init__(self, client: Client, home: Path, drives: Callable[[str], bool]) -> None:
        """``client``: the embedded engine's; ``drives``: whether the server's engine is
        driving a run."""
        super().__init__(
            client.store, client._transport, shards=client._shards, clock=client._clock
        )
        self._home = home
        self._drives = drives

    async def cancel(self, run: str, reason: str = "cancelled by user") -> str:
        state = await self.state(run)
        asker = "conveyor cancel" if reason == CANCELLED_BY_CLI else "the API"
        if not state.finished and interrupt_holder(self._home, state.run_id, asker) is not None:
            return state.run_id
        return await super().cancel(state.run_id, reason)

    async def retry(self, run: str) -> RunState:
        self._not_elsewhere(await self.find(run))
        return await super().retry(run)

    async def resume(self, run: str, *, steps_lost: bool = False) -> str:
        run_id = await self.find(run)
        self._not_elsewhere(run_id)
        if self._drives(run_id):
            raise Conflict(
                [Problem(f"run {run_id} is running already, in the server (process {os.getpid()})")]
            )
        return await super().resume(run_id, steps_lost=steps_lost)

    async def signal(
        self, run: str, name: str, data: Any = None, *, key: str | None = None, sender: str = ""
    ) -> str:
        self._not_elsewhere(await self.find(run))
        return await super().signal(run, name, data, key=key, sender=sender)

    async def delete(
        self,
        run: str,
        artifacts: ArtifactStore | None = None,
        *,
        deleted: Callable[[RunSummary], None] | None = None,
    ) -> str:
        def forget(row: RunSummary) -> None:
            forget_run(self._home, row.run_id)
            if deleted is not None:
                deleted(row)

        return await super().delete(run, artifacts, deleted=forget)

    def stalled(self, run_id: str) -> bool:
        """Whether no process drives this unfinished run: neither the server's engine nor
        a ``conveyor run``, ``resume`` or ``retry`` of the home."""
        return not self._drives(run_id) and RunLock(self._home, run_id).holder() is None

    def _not_elsewhere(self, run_id: str) -> None:
        RunLock(self._home, run_id).refuse_if_held(
            " on this home: steer it with the command line there (conveyor signal, approve, cancel)"
        )


STALL_GRACE = 2.0
"""Seconds a run must have been quiet before it can count as stalled: the server's engine
takes up a run it was sent a moment after the run is in the log."""


def stalled_runs(client: Client, runs: Iterable[tuple[str, float]], now: float) -> set[str]:
    """Of unfinished runs, (id, when it was last known to move) each, those no process
    drives.

    Only an embedded server can tell: on the distributed engine another coordinator takes
    up a run whose coordinator died, so none is ever stalled there."""
    if not isinstance(client, ServedClient):
        return set()
    return {
        run for run, quiet_since in runs if now - quiet_since > STALL_GRACE and client.stalled(run)
    }


def listed(client: Client, rows: list[RunSummary], now: float) -> list[dict[str, Any]]:
    """A page of the run list, each row saying whether no process drives its run (a row
    knows only when its run was submitted)."""
    running = ((row.run_id, row.submitted_at) for row in rows if row.state == "running")
    stalled = stalled_runs(client, running, now)
    return [summary_shape(row, stalled=row.run_id in stalled) for row in rows]


def run_stalled(client: Client, state: RunState, now: float) -> bool:
    """Whether no process drives the run (quiet since its latest event)."""
    return not state.finished and bool(stalled_runs(client, [(state.run_id, state.now)], now))


def resumable(client: Client, state: RunState, stalled: bool) -> bool:
    """Whether to offer a resume: an embedded server drives the runs of its home itself,
    or leaves them to the process that does, so only a run nothing drives; on the
    distributed engine, any unfinished run."""
    return not state.finished and (stalled or not isinstance(client, ServedClient))
