"""Deleting runs, on Redis and SQLite: how fast a home is pruned, and what deleting a
big run costs the runs going on beside it.

- ``prune_runs_per_s_redis`` / ``..._sqlite``: ended runs (five events and two output
  lines each) deleted per second by ``engine.retention.prune``, over 5,000 runs.
- ``delete_100k_run_redis_s`` / ``..._sqlite_s``: deleting one run of 100,000 items
  (200,003 events, a line list per item).
- ``stall_during_delete_max_ms_redis`` / ``..._sqlite``: while that deletion goes on,
  another run appends every 5 ms: the longest it waited beyond those 5 ms (its store
  busy, or the event loop it shares with the deletion); ``stall_idle_max_ms_*`` the
  same with nothing being deleted, side by side.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from contracts.events import RunCompleted, RunSubmitted, TaskDispatched, TaskSucceeded
from contracts.ports import LogLine, RunStore
from engine.client import Client
from engine.retention import Retention, prune
from engine.runlog.redis import RedisRunLog
from engine.runlog.sqlite import SqliteRunLog

BIG = "retention-big"
BESIDE = "retention-beside"
WORKFLOW = "retention-benchmark"
"""The benchmark's runs are all of this workflow, and it prunes that workflow only: a
Redis given by ``CONVEYOR_REDIS_URL`` may hold runs of its own."""


def _submitted(run_id: str) -> RunSubmitted:
    return RunSubmitted(run_id=run_id, at=1.0, workflow={"name": WORKFLOW}, params={})


def _line(run_id: str, index: int, text: str) -> LogLine:
    return LogLine(
        run_id=run_id, task="t", index=index, attempt=1, stream="stdout", at=1.0, text=text
    )


async def _small_runs(store: RunStore, count: int) -> None:
    for n in range(count):
        run_id = f"small-{n:06}"
        await store.append(run_id, [_submitted(run_id)])
        events = [
            TaskDispatched(run_id=run_id, at=1.1, task="t"),
            TaskSucceeded(run_id=run_id, at=1.2, task="t", result=n),
            RunCompleted(run_id=run_id, at=1.3, state="succeeded"),
        ]
        await store.append(run_id, events)
        await store.write_lines([_line(run_id, 0, "one"), _line(run_id, 0, "two")])


async def _big_run(store: RunStore, items: int) -> None:
    await store.append(BIG, [_submitted(BIG)])
    for start in range(0, items, 5_000):
        chunk = range(start, min(start + 5_000, items))
        await store.append(
            BIG, [TaskDispatched(run_id=BIG, at=1.1, task="t", index=i) for i in chunk]
        )
        await store.append(
            BIG, [TaskSucceeded(run_id=BIG, at=1.2, task="t", index=i, result=i) for i in chunk]
        )
        await store.write_lines([_line(BIG, i, f"item {i}") for i in chunk])
    await store.append(BIG, [RunCompleted(run_id=BIG, at=2.0, state="succeeded")])


async def _longest_stall(store: RunStore, during: Callable[[], Awaitable[object]]) -> float:
    """While ``during`` runs, another run appends every 5 ms: the longest it waited
    beyond those 5 ms for an append to be done (the loop busy elsewhere included)."""
    longest = 0.0
    working = asyncio.ensure_future(during())
    n = 0
    last = time.perf_counter()
    while not working.done():
        n += 1
        await asyncio.sleep(0.005)
        await store.append(BESIDE, [TaskDispatched(run_id=BESIDE, at=3.0, task="t", index=n)])
        now = time.perf_counter()
        longest = max(longest, now - last - 0.005)
        last = now
    await working
    return longest * 1000


async def _measure(store: RunStore, label: str, runs: int, items: int) -> dict[str, float]:
    await store.append(BESIDE, [_submitted(BESIDE)])
    await _small_runs(store, runs)
    started = time.perf_counter()
    done = await prune(Client(store), Retention(keep=0, workflow=WORKFLOW), 10.0)
    took = time.perf_counter() - started
    assert done.deleted >= runs, done  # (and any left by a benchmark cut short)
    await _big_run(store, items)
    idle = await _longest_stall(store, lambda: asyncio.sleep(0.5))
    deleting: dict[str, float] = {}

    async def delete_big() -> None:
        started = time.perf_counter()
        assert await store.delete(BIG)
        deleting["s"] = time.perf_counter() - started

    during = await _longest_stall(store, delete_big)
    await store.append(BESIDE, [RunCompleted(run_id=BESIDE, at=4.0, state="succeeded")])
    await store.delete(BESIDE)
    # No coordinator announced the benchmark's run changes: they are marked so here.
    mine = ("small-", BIG, BESIDE)
    await store.announced([e.id for e in await store.unannounced() if e.run_id.startswith(mine)])
    return {
        f"prune_runs_per_s_{label}": runs / took,
        f"delete_{items // 1000}k_run_{label}_s": deleting["s"],
        f"stall_during_delete_max_ms_{label}": during,
        f"stall_idle_max_ms_{label}": idle,
    }


async def retention(redis_url: str, runs: int = 5_000, items: int = 100_000) -> dict[str, float]:
    redis = RedisRunLog(redis_url)
    try:
        figures = await _measure(redis, "redis", runs, items)
    finally:
        await redis.close()
    with tempfile.TemporaryDirectory() as folder:
        sqlite = SqliteRunLog(Path(folder) / "home.db")
        try:
            figures |= await _measure(sqlite, "sqlite", runs, items)
        finally:
            await sqlite.close()
    return figures
