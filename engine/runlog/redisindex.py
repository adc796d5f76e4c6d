"""The run index on Redis: a run's summary hash and its fields, listing runs from the
index's sorted sets, and the set of top-level runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contracts.codec import encode
from contracts.events import Event, RunCompleted, RunSubmitted
from contracts.ports import RunSummary
from contracts.vocabulary import CHILD_TRIGGER
from engine.runlog.rediskeys import (
    ALL_RUNS,
    TOP_LEVEL_BUILT,
    TOP_LEVEL_RUNS,
    UNANNOUNCED,
    UNANNOUNCED_BODIES,
    key,
    run_indexes,
    running_on,
    runs_in_state,
)
from engine.runlog.redisstream import events_of

BUILD_CHUNK = 1000
DELETED = b"deleted"
"""The field that marks a summary whose run is deleted but for its place in the index."""


def row_fields(row: RunSummary) -> dict[str, str]:
    return {
        "workflow": row.workflow,
        "state": row.state,
        "submitted_at": repr(row.submitted_at),
        "finished_at": "" if row.finished_at is None else repr(row.finished_at),
        "reason": row.reason,
        "trigger": row.trigger,
        "shard": "" if row.shard is None else str(row.shard),
    }


def queue_row(pipe: Any, current: RunSummary | None, row: RunSummary) -> None:
    """Queue on ``pipe`` the writes that make ``row`` the run's index row, in place of
    ``current`` (its row now, if any)."""
    run_id = row.run_id
    if current is not None:
        pipe.zrem(runs_in_state(current.state), run_id)
        if current.state == "running" and current.shard is not None:
            pipe.zrem(running_on(current.shard), run_id)
    if row.state == "running" and row.shard is not None:
        pipe.zadd(running_on(row.shard), {run_id: row.submitted_at})
    pipe.hset(key(run_id, "summary"), mapping=row_fields(row))
    pipe.hdel(key(run_id, "summary"), DELETED)  # a run submitted anew under its id
    for index in run_indexes(row):
        pipe.zadd(index, {run_id: row.submitted_at})


def queue_owed(pipe: Any, event: Event) -> None:
    """Queue on ``pipe`` keeping ``event``, a run change, as owed an announcement."""
    pipe.hset(UNANNOUNCED_BODIES, event.id, encode(event))
    pipe.zadd(UNANNOUNCED, {event.id: event.at})


CHANGES_LOOKED_BACK = 64
"""Appends read back from a run's end for its completion (late results may follow it)."""


async def changes_behind(redis: Any, current: RunSummary | None, row: RunSummary) -> list[Event]:
    """The run changes whose writes may have gone with those that left the index row
    ``current`` behind ``row`` (the log's): its submission, if it had no row; its latest
    completion, if it ended. (One kept owed again is announced again: at least once.)"""
    events = key(row.run_id, "events")
    found: list[Event] = []
    if current is None:
        first = events_of(await redis.xrange(events, count=1))
        found += [e for e in first if isinstance(e, RunSubmitted)]
    if row.state != "running":
        newest_first = await redis.xrevrange(events, count=CHANGES_LOOKED_BACK)
        ends = events_of(newest_first[::-1])
        found += [e for e in ends if isinstance(e, RunCompleted)][-1:]
    return found


async def forget_row(redis: Any, row: RunSummary) -> None:
    """Take back the row just written of a run deleted since it was read (the deletion
    took the events, and the row then written would list the run, say running, with
    nothing to drive it)."""
    pipe = redis.pipeline(transaction=False)
    # (A Cluster pipeline's own ``unlink`` cannot be queued.)
    pipe.execute_command("UNLINK", key(row.run_id, "summary"))
    for index in run_indexes(row):
        pipe.zrem(index, row.run_id)
    if row.shard is not None:
        pipe.zrem(running_on(row.shard), row.run_id)
    await pipe.execute()


def row_from(run_id: str, raw: dict[bytes, bytes]) -> RunSummary:
    finished = raw.get(b"finished_at", b"").decode()
    return RunSummary(
        run_id=run_id,
        workflow=raw[b"workflow"].decode(),
        state=raw[b"state"].decode(),
        submitted_at=float(raw[b"submitted_at"]),
        finished_at=float(finished) if finished else None,
        reason=raw.get(b"reason", b"").decode(),
        trigger=raw.get(b"trigger", b"").decode(),
        shard=int(raw[b"shard"]) if raw.get(b"shard") else None,
    )


async def top_level_runs(redis: Any) -> str:
    """The sorted set of top-level runs, filled first with the runs listed before it was
    kept, once per run log. (Filling it again side by side, or over a run deleted
    meanwhile, is harmless: a listing skips an id whose summary is gone.)"""
    if await redis.exists(TOP_LEVEL_BUILT):
        return TOP_LEVEL_RUNS
    offset = 0
    while listed := await redis.zrange(ALL_RUNS, offset, offset + BUILD_CHUNK - 1, withscores=True):
        offset += len(listed)
        pipe = redis.pipeline(transaction=False)
        for run_id, _score in listed:
            pipe.hmget(key(run_id.decode(), "summary"), ["workflow", "trigger"])
        rows = await pipe.execute()
        top = {
            run_id: score
            for (run_id, score), (workflow, trigger) in zip(listed, rows, strict=True)
            if workflow is not None and not (trigger or b"").decode().startswith(CHILD_TRIGGER)
        }
        if top:
            await redis.zadd(TOP_LEVEL_RUNS, top)
    await redis.set(TOP_LEVEL_BUILT, b"1")
    return TOP_LEVEL_RUNS


async def listed(
    redis: Any,
    source: str,
    *,
    limit: int,
    before: tuple[float, str] | None,
    since: float | None,
    until: float | None,
    wanted: Callable[[RunSummary], bool],
) -> tuple[list[RunSummary], list[RunSummary]]:
    """Rows of the sorted set ``source``, newest first: up to ``limit`` wanted ones after
    the cursor ``before`` and within ``since``/``until``; and the rows of deletions cut
    short that were passed on the way (for the caller to finish)."""
    rows: list[RunSummary] = []
    deleted: list[RunSummary] = []
    offset = 0
    tops = [t for t in (None if before is None else before[0], until) if t is not None]
    top: float | str = min(tops) if tops else "+inf"
    bottom: float | str = since if since is not None else "-inf"
    while len(rows) < limit:
        ids = await redis.zrevrangebyscore(source, top, bottom, start=offset, num=4 * limit)
        if not ids:
            break
        offset += len(ids)
        pipe = redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(key(run_id.decode(), "summary"))
        for run_id, raw in zip(ids, await pipe.execute(), strict=True):
            if not raw:
                continue
            row = row_from(run_id.decode(), raw)
            if DELETED in raw:
                deleted.append(row)
            elif (before is None or (row.submitted_at, row.run_id) < before) and wanted(row):
                rows.append(row)
    rows.sort(key=lambda r: (r.submitted_at, r.run_id), reverse=True)
    return rows[:limit], deleted
