"""Paging through the lines of a big fan-out task, on Redis and SQLite.

- ``log_page_redis_ms`` / ``log_page_sqlite_ms``: the median time to read a page of
  5,000 lines (``TaskLogStore.page_lines``, what ``GET /runs/{run}/logs`` serves) of
  a task of 100,000 items that printed two lines each, over twenty pages from its
  start; ``log_whole_task_*_ms`` the time to read all 200,000 lines at once, as every
  page did before pages were read on their own.
- ``log_follow_look_redis_ms`` / ``..._sqlite_ms``: one look of ``conveyor logs -f`` at
  that task while eight of its attempts run and print (``engine.logfollow``), the
  median of twenty; before, every look read the whole task.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from contracts.events import TaskStarted
from contracts.ports import LogLine, LogPosition, RunStore
from engine.logfollow import LineFollower
from engine.runlog.redis import RedisRunLog
from engine.runlog.rediskeys import key
from engine.runlog.sqlite import SqliteRunLog

RUN = "log-pages-benchmark"


def _line(index: int, at: float, text: str) -> LogLine:
    return LogLine(
        run_id=RUN, task="each", index=index, attempt=1, stream="stdout", at=at, text=text
    )


async def _measure(store: RunStore, items: int, page: int, label: str) -> dict[str, float]:
    for start in range(0, items, 1_000):
        await store.write_lines(
            [
                _line(i, float(i), f"item {i} line {k}")
                for i in range(start, min(start + 1_000, items))
                for k in range(2)
            ]
        )
    started = time.perf_counter()
    whole = await store.read_lines(RUN, "each")
    whole_ms = (time.perf_counter() - started) * 1000
    assert len(whole) == 2 * items
    took: list[float] = []
    after: LogPosition | None = None
    for _ in range(20):
        started = time.perf_counter()
        lines = await store.page_lines(RUN, "each", after=after, limit=page)
        took.append((time.perf_counter() - started) * 1000)
        after = lines.next
        if after is None:
            break
    return {
        f"log_page_{label}_ms": statistics.median(took),
        f"log_whole_task_{label}_ms": whole_ms,
        f"log_follow_look_{label}_ms": await _follow_look(store, items),
    }


async def _follow_look(store: RunStore, items: int, running: int = 8) -> float:
    """A look while ``running`` attempts (the last items) print a line each between looks."""
    live = range(items - running, items)
    follower = LineFollower(store, RUN, "each")
    past = [TaskStarted(run_id=RUN, at=0.0, task="each", index=i) for i in live]
    await follower.begin(past)
    took: list[float] = []
    for look in range(20):
        await store.write_lines([_line(i, float(items + look), f"look {look}") for i in live])
        started = time.perf_counter()
        found = await follower.look()
        took.append((time.perf_counter() - started) * 1000)
        assert len(found) == running
    return statistics.median(took)


async def log_pages(redis_url: str, items: int = 100_000, page: int = 5_000) -> dict[str, float]:
    redis = RedisRunLog(redis_url)
    try:
        figures = await _measure(redis, items, page, "redis")
    finally:
        stale = [found async for found in redis._redis.scan_iter(match=key(RUN, "*"), count=10_000)]
        for at in range(0, len(stale), 10_000):
            await redis._redis.delete(*stale[at : at + 10_000])
        await redis.close()
    with tempfile.TemporaryDirectory() as folder:
        sqlite = SqliteRunLog(Path(folder) / "logs.db")
        try:
            figures |= await _measure(sqlite, items, page, "sqlite")
        finally:
            await sqlite.close()
    return figures
