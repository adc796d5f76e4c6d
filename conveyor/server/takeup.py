"""The runs of its home that no process drives go on in the embedded server.

A ``conveyor run`` killed outright (SIGKILL, the out-of-memory killer, a crash) leaves
its run unfinished, with nothing to drive it: a stop signal would have cancelled it.
On the distributed engine another coordinator takes up a run whose coordinator died;
on a served home the server does, so that no run is left behind because of when its
process died. It takes up such runs when it starts, and, while it serves, every
``interval`` seconds (``CONVEYOR_WAKE_INTERVAL``) those it found undriven at two
checks in a row: an instant after a run's start is written to the home, neither its
engine nor its lock may show yet, and two checks apart are not in that instant.

The steps of such a run died with its process, so what was running runs again (a
resume with its steps lost). A run a process drives (its lock is held) is never taken.
A child run whose parent is taken up goes with its parent.
"""

from __future__ import annotations

import asyncio

import structlog

from contracts.errors import Conflict
from conveyor.server.served import ServedClient
from engine.runlog.index import parent_of

log = structlog.get_logger("conveyor.server")


async def take_up_left_unfinished(client: ServedClient) -> None:
    """At the server's start: every unfinished run no process drives goes on here (its
    engine holds none yet, so none is in the instant a second look guards against)."""
    await take_up_stalled(client, seen=None)


async def keep_taking_up(client: ServedClient, interval: float) -> None:
    """While the server serves: take up the runs found undriven twice in a row."""
    seen: set[str] = set()
    while True:
        await asyncio.sleep(interval)
        seen = await take_up_stalled(client, seen)


async def take_up_stalled(client: ServedClient, seen: set[str] | None) -> set[str]:
    """Resume the unfinished runs no process drives that were in ``seen`` (undriven at
    the last check) too, or all of them if there was no last check (None); returns the
    rest of those found undriven now, for the next."""
    undriven = {run_id for run_id in await client.store.running() if client.stalled(run_id)}
    log.debug("looked for runs no process drives", undriven=len(undriven))
    taken = undriven if seen is None else undriven & seen
    for run_id in sorted(taken):
        if await _its_parent_is_taken_up(client, run_id, taken):
            continue
        log.warning("taking up a run no process drives (its process died)", run_id=run_id)
        await _take_up(client, run_id)
    return undriven - taken


async def _its_parent_is_taken_up(client: ServedClient, run_id: str, taken: set[str]) -> bool:
    """Whether the run is a child run whose parent is taken up too. The parent takes it up
    with it; taken up again, as a run of its own, its steps would be sent twice."""
    summary = await client.store.summary(run_id)
    return summary is not None and parent_of(summary) in taken


async def _take_up(client: ServedClient, run_id: str) -> None:
    try:
        await client.resume(run_id, steps_lost=True)
    except Conflict as refused:  # a process took it up since: it drives it
        log.info("left a run to the process that took it up", run_id=run_id, why=str(refused))
