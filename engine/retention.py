"""Retention: which finished runs are old enough to go, and deleting them.

Runs otherwise stay for good: a webhook firing 50 times a second makes four million a
day. Users of Argo (``ttlStrategy``), Airflow (``db clean``) and Temporal (a
namespace's retention) keep runs for a period; this is that rule, applied by
``conveyor prune`` and by a server given a retention period. Only ended runs go: a run
still running (or retried meanwhile) is never touched.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog

from contracts.errors import Conflict, ConveyorError, NotFound
from contracts.ports import ArtifactStore, RunSummary
from engine.client import Client
from engine.redis_retry import UNREACHABLE

log = structlog.get_logger("conveyor.retention")

PAGE = 500
"""Index rows read at a time: a home of millions of runs is never listed whole."""
AT_ONCE = 16
"""Runs deleted at the same time: a deletion on Redis is a dozen round trips, mostly
waiting."""
LONGEST_PAUSE = 3600.0
"""Most seconds between two prunings of a server: a run is kept at most this much
longer than its period."""


@dataclass(frozen=True)
class Retention:
    """Keep finished runs ``keep`` seconds after they ended; of one state or workflow
    only, if given (the index is read with those filters)."""

    keep: float
    state: str | None = None
    workflow: str | None = None

    def expired(self, row: RunSummary, now: float) -> bool:
        """Whether a row the index gave for this rule's filters has ended long enough ago."""
        return (
            row.state != "running"
            and row.finished_at is not None
            and row.finished_at <= now - self.keep
        )


@dataclass
class Pruned:
    """What one pruning did."""

    deleted: int = 0
    kept_running: int = 0
    """Runs found expired that were running again by the time they were deleted."""


async def expired_runs(client: Client, rule: Retention, now: float) -> AsyncIterator[RunSummary]:
    """Runs past ``rule`` at ``now``, newest first, read a page at a time. A run that
    ended before ``now - keep`` was submitted before it too, so the index is read up to
    there only."""
    before: tuple[float, str] | None = None
    while rows := await client.runs(
        state=rule.state,
        workflow=rule.workflow,
        limit=PAGE,
        before=before,
        until=now - rule.keep,
    ):
        for row in rows:
            if rule.expired(row, now):
                yield row
        before = (rows[-1].submitted_at, rows[-1].run_id)


async def prune(
    client: Client,
    rule: Retention,
    now: float,
    *,
    artifacts: ArtifactStore | None = None,
    deleted: Callable[[RunSummary], None] | None = None,
) -> Pruned:
    """Delete every run past ``rule`` (with its artifacts, given the store), ``AT_ONCE``
    at a time; ``deleted`` hears of each run as it goes."""
    done = Pruned()

    def gone(row: RunSummary) -> None:
        done.deleted += 1
        log.debug("run deleted", run_id=row.run_id, state=row.state, workflow=row.workflow)
        if deleted is not None:
            deleted(row)

    async def delete(row: RunSummary) -> None:
        # A run's child runs go with it (counted each), whatever their own age.
        try:
            await client.delete(row.run_id, artifacts, deleted=gone)
        except Conflict:
            done.kept_running += 1
        except NotFound:  # deleted meanwhile: by another pruner, or with its parent
            pass

    batch: list[RunSummary] = []
    async for row in expired_runs(client, rule, now):
        batch.append(row)
        if len(batch) == AT_ONCE:
            await asyncio.gather(*map(delete, batch))
            batch = []
    await asyncio.gather(*map(delete, batch))
    return done


def pause_between(keep: float) -> float:
    """Seconds between prunings: a tenth of the period, from a second up to an hour."""
    return min(LONGEST_PAUSE, max(1.0, keep / 10))


async def keep_pruning(
    client: Client,
    rule: Retention,
    *,
    artifacts: ArtifactStore | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """A server's retention: prune now, then every ``pause_between`` seconds, until
    cancelled. A pruning that fails (Redis out of reach where a call is not retried,
    such as a page of the index; a local home's file locked) is tried again at the
    next, and the server goes on serving."""
    while True:
        try:
            done = await prune(client, rule, clock(), artifacts=artifacts)
        except (ConveyorError, sqlite3.Error, *UNREACHABLE) as exc:
            log.warning("pruning failed; trying again later", error=str(exc))
        else:
            if done.deleted or done.kept_running:
                log.info("pruned runs", deleted=done.deleted, kept_running=done.kept_running)
        await asyncio.sleep(pause_between(rule.keep))
