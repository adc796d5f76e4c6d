"""Behaviour every run log must have. Runs against each implementation."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contracts.errors import NotFound
from contracts.events import (
    RunCompleted,
    RunRetryRequested,
    RunSubmitted,
    TaskDispatched,
    TaskSucceeded,
)
from contracts.ports import LogLine, LogPage, RunStore
from contracts.vocabulary import RunStatus
from engine.runlog.redis import RedisRunLog
from engine.runlog.rediskeys import (
    TOP_LEVEL_BUILT,
    TOP_LEVEL_RUNS,
    UNANNOUNCED,
    UNANNOUNCED_BODIES,
    key,
)
from engine.runlog.sqlite import UNFINISHED_RUNS, SqliteRunLog


def submitted(run_id: str, workflow: str = "wf", at: float = 1.0) -> RunSubmitted:
    return RunSubmitted(run_id=run_id, at=at, workflow={"name": workflow}, params={})


async def test_append_is_ordered_and_idempotent(store: RunStore) -> None:
    events = [
        submitted("r1"),
        TaskDispatched(run_id="r1", at=2.0, task="a"),
        TaskSucceeded(run_id="r1", at=3.0, task="a", result=1),
    ]
    assert await store.append("r1", events[:2]) == [True, True]
    assert await store.append("r1", [events[1], events[2]]) == [False, True]
    assert await store.append("r1", events) == [False, False, False]
    assert await store.read("r1") == events


async def test_decisions_are_appended_only_after_new_events(store: RunStore) -> None:
    submit = submitted("r1")
    dispatch = TaskDispatched(run_id="r1", at=2.0, task="a")
    result = TaskSucceeded(run_id="r1", at=3.0, task="a", result=1)
    assert await store.append("r1", [submit], then=[dispatch]) == [True, True]
    # A redelivered event: what was decided on top of it must not land a second time.
    later = TaskDispatched(run_id="r1", at=4.0, task="b")
    assert await store.append("r1", [submit, result], then=[later]) == [False, True, False]
    assert await store.read("r1") == [submit, dispatch, result]
    assert await store.append("r1", [], then=[later]) == [True]
    assert (await store.read("r1"))[-1] == later


async def test_large_appends_keep_order_and_ids(store: RunStore) -> None:
    many = [TaskDispatched(run_id="big", at=2.0, task="each", index=i) for i in range(1_203)]
    twice = [*many[:3], many[0]]  # the same id twice in one call is one event
    assert await store.append("big", [submitted("big")], then=many) == [True] * 1_204
    assert await store.append("big", twice) == [False] * 4
    extra = TaskDispatched(run_id="big", at=3.0, task="tail")
    assert await store.append("big", [extra, extra]) == [True, False]
    events = await store.read("big")
    assert events == [submitted("big"), *many, extra]


async def test_unknown_run_is_not_found(store: RunStore) -> None:
    with pytest.raises(NotFound):
        await store.read("nope")
    with pytest.raises(NotFound):
        await store.find_run("nope")


async def test_index_lists_filters_and_finds_runs(store: RunStore) -> None:
    await store.append("aaa1", [submitted("aaa1", "etl", at=1.0)])
    await store.append("aaa2", [submitted("aaa2", "report", at=2.0)])
    await store.append("bbb3", [submitted("bbb3", "etl", at=3.0)])
    await store.append("aaa1", [RunCompleted(run_id="aaa1", at=5.0, state="failed", reason="x")])
    assert [r.run_id for r in await store.runs()] == ["bbb3", "aaa2", "aaa1"]
    assert [r.run_id for r in await store.runs(workflow="etl")] == ["bbb3", "aaa1"]
    [failed] = await store.runs(state="failed")
    assert (failed.run_id, failed.finished_at, failed.reason) == ("aaa1", 5.0, "x")
    assert [r.run_id for r in await store.runs(state="running", limit=1)] == ["bbb3"]
    assert await store.find_run("bbb") == "bbb3"
    with pytest.raises(NotFound, match="ambiguous"):
        await store.find_run("aaa")


async def test_task_logs_are_kept_per_attempt(store: RunStore) -> None:
    lines = [
        LogLine(run_id="r", task="a", index=0, attempt=1, stream="stdout", at=1.0, text="one"),
        LogLine(run_id="r", task="a", index=0, attempt=2, stream="stderr", at=2.0, text="two"),
        LogLine(run_id="r", task="b", index=3, attempt=1, stream="stdout", at=3.0, text="three"),
    ]
    await store.write_lines(lines)
    assert await store.read_lines("r") == lines
    assert [line.text for line in await store.read_lines("r", "a")] == ["one", "two"]
    more = [
        LogLine(run_id="r", task="b", index=i, attempt=1, stream="stdout", at=4.0 + i, text=f"b{i}")
        for i in range(12)
    ]
    await store.write_lines(more)
    # One item: its lines only (item 1, not 10 or 11, whose names start the same).
    assert [line.text for line in await store.read_lines("r", "b", 1)] == ["b1"]
    assert [line.text for line in await store.read_lines("r", "b", 3)] == ["three", "b3"]
    assert await store.read_lines("r", "a", 3) == []


def _printed(run_id: str = "r") -> list[LogLine]:
    """Lines of two tasks printed interleaved: items 0-11 of ``b`` (10 and 11 sort
    before 2 by name, after it by number), item 3 retried, and ``a`` twice."""
    lines = []
    for at in range(4):
        for index in (11, 2, 0, 10, 3, 1, *range(4, 10)):
            if at < 1 + index % 3:
                lines.append(
                    LogLine(
                        run_id=run_id,
                        task="b",
                        index=index,
                        attempt=1,
                        stream="stdout",
                        at=float(at),
                        text=f"b{index}.1 line {at}",
                    )
                )
        lines.append(
            LogLine(
                run_id=run_id,
                task="b" if at % 2 else "a",
                index=3 if at % 2 else 0,
                attempt=2 + at // 2,
                stream="stderr",
                at=at + 0.5,
                text=f"retry {at}",
            )
        )
    return lines


def _page_order(lines: list[LogLine]) -> list[LogLine]:
    return sorted(lines, key=lambda ln: (ln.task, ln.index, ln.attempt))


async def _all_pages(store: RunStore, limit: int, **asked: Any) -> list[LogLine]:
    found: list[LogLine] = []
    after = None
    for _ in range(200):
        page = await store.page_lines("r", **asked, after=after, limit=limit)
        assert len(page.lines) <= limit
        found += page.lines
        if page.next is None:
            return found
        assert len(page.lines) == limit  # a short page is the last one
        after = page.next
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
async def test_lines_page_in_order_of_task_item_and_attempt(store: RunStore, limit: int) -> None:
    printed = _printed()
    for at in range(0, len(printed), 5):  # written in several batches, as workers flush
        await store.write_lines(printed[at : at + 5])
    assert await _all_pages(store, limit) == _page_order(printed)
    assert await _all_pages(store, limit, task="b") == [
        ln for ln in _page_order(printed) if ln.task == "b"
    ]
    assert await _all_pages(store, limit, task="b", index=3) == [
        ln for ln in _page_order(printed) if ln.task == "b" and ln.index == 3
    ]
    assert await _all_pages(store, limit, task="b", attempt=2) == [
        ln for ln in printed if ln.task == "b" and ln.attempt == 2
    ]
    assert await _all_pages(store, limit, task="b", index=30) == []
    # A position from before what is asked for (a page of another task) starts at its
    # beginning, skipping nothing of it.
    elsewhere = await store.page_lines("r", "b", after=("a", 0, 2, 1), limit=limit)
    assert elsewhere.lines == [ln for ln in _page_order(printed) if ln.task == "b"][:limit]
    assert await _all_pages(store, limit, task="c") == []


async def test_a_page_ends_where_the_next_begins_while_lines_are_added(store: RunStore) -> None:
    first = [
        LogLine(run_id="r", task="t", index=i, attempt=1, stream="stdout", at=0.0, text=f"{i}.0")
        for i in (0, 0, 1)
    ]
    await store.write_lines(first)
    page = await store.page_lines("r", limit=1)
    assert [ln.text for ln in page.lines] == ["0.0"] and page.next == ("t", 0, 1, 1)
    # The attempt the page ended in prints more; so do an earlier and a later item.
    more = [
        LogLine(run_id="r", task="t", index=i, attempt=1, stream="stdout", at=1.0, text=f"{i}.1")
        for i in (0, 2)
    ]
    await store.write_lines(more)
    rest = await store.page_lines("r", after=page.next, limit=10)
    assert [ln.text for ln in rest.lines] == ["0.0", "0.1", "1.0", "2.1"]
    assert rest.next is None
    assert (await store.page_lines("nothing-here", limit=10)) == LogPage(lines=[], next=None)


async def test_redis_reads_the_lines_stored_before_the_log_index(redis_url: str) -> None:
    """Lists written before the sorted index of log lists are in a plain set: they are
    read, also for a run that goes on after the upgrade."""
    store = RedisRunLog(redis_url)
    try:
        run_id = "stored-before-the-index"
        for index in (1, 10):
            line = LogLine(
                run_id=run_id, task="b", index=index, attempt=1, stream="stdout", at=index, text=""
            )
            list_key = key(run_id, f"log:b:{index}:1")
            await store._redis.rpush(list_key, msgspec.json.encode(line))
            await store._redis.sadd(key(run_id, "logkeys"), list_key)
        assert [ln.index for ln in await store.read_lines(run_id, "b", 1)] == [1]
        assert [ln.index for ln in await store.read_lines(run_id, "b")] == [1, 10]
        # The run goes on once the index is kept: its lines from before are still read.
        later = LogLine(
            run_id=run_id, task="b", index=1, attempt=2, stream="stdout", at=20.0, text=""
        )
        await store.write_lines([later])
        assert [(ln.index, ln.attempt) for ln in await store.read_lines(run_id, "b", 1)] == [
            (1, 1),
            (1, 2),
        ]
    finally:
        parts = ("logkeys", "logindex", "log:b:1:1", "log:b:1:2", "log:b:10:1")
        await store._redis.delete(*(key(run_id, part) for part in parts))
        await store.close()


async def test_redis_finds_a_run_by_its_id_before_its_index_row_is_written(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index row follows the append by a round trip; a reader that saw the run's
    first events (a follower) must find the run by its id in between."""
    store = RedisRunLog(redis_url)
    run_id = "appended-not-yet-indexed"

    async def row_not_written_yet(*_args: Any) -> None:
        return None

    try:
        monkeypatch.setattr(store, "_update_index", row_not_written_yet)
        await store.append(run_id, [submitted(run_id)])
        assert await store.summary(run_id) is None  # the window
        assert await store.find_run(run_id) == run_id
        with pytest.raises(NotFound):
            await store.find_run("appended-not")  # a prefix needs the row
    finally:
        await store._redis.delete(key(run_id, "events"), key(run_id, "ids"))
        await store.close()


async def test_redis_pages_the_lines_stored_before_the_page_order(redis_url: str) -> None:
    """A run whose lists were written before the page order was kept (only the index by
    name) is paged by reading its lines whole: the same pages, not fewer lines."""
    store = RedisRunLog(redis_url)
    run_id = "r"
    try:
        await store._redis.flushdb()
        printed = _printed(run_id)
        await store.write_lines(printed)
        await store._redis.delete(
            key(run_id, "logtasks"), key(run_id, "logitems:a"), key(run_id, "logitems:b")
        )
        for limit in (3, 100):
            assert await _all_pages(store, limit) == _page_order(printed)
            assert await _all_pages(store, limit, task="b", attempt=2) == [
                ln for ln in printed if ln.task == "b" and ln.attempt == 2
            ]
    finally:
        await store._redis.flushdb()
        await store.close()


def _file_pages(store: SqliteRunLog) -> tuple[int, int]:
    """The file's pages, and how many of them are free."""
    db = store._db
    return db.execute("PRAGMA page_count").fetchone()[0], db.execute(
        "PRAGMA freelist_count"
    ).fetchone()[0]


async def _a_big_finished_run(store: SqliteRunLog, run_id: str) -> None:
    done = [
        TaskSucceeded(run_id=run_id, at=2.0, task="each", index=i, attempt=1, result="x" * 200)
        for i in range(5_000)
    ]
    finished = RunCompleted(run_id=run_id, at=3.0, state=RunStatus.SUCCEEDED)
    await store.append(run_id, [submitted(run_id)], then=[*done, finished])


async def test_sqlite_gives_a_deleted_runs_pages_back_to_the_file_system(tmp_path: Path) -> None:
    store = SqliteRunLog(tmp_path / "c.db")
    try:
        await store.append("small", [submitted("small")])
        empty, _ = _file_pages(store)
        await _a_big_finished_run(store, "big")
        grown, _ = _file_pages(store)
        assert grown > empty + 200
        assert await store.delete("big")
        pages, free = _file_pages(store)
        assert free == 0 and pages < empty + 20
        assert [r.run_id for r in await store.runs()] == ["small"]
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert (tmp_path / "c.db").stat().st_size == pages * 4096
    finally:
        await store.close()


async def test_a_sqlite_file_made_before_keeps_its_freed_pages_for_new_runs(
    tmp_path: Path,
) -> None:
    with sqlite3.connect(tmp_path / "c.db") as made_before:  # no incremental vacuum
        made_before.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY)")
    store = SqliteRunLog(tmp_path / "c.db")
    try:
        await _a_big_finished_run(store, "big")
        grown, _ = _file_pages(store)
        assert await store.delete("big")
        pages, free = _file_pages(store)
        assert pages == grown and free > 200
        await _a_big_finished_run(store, "again")
        assert _file_pages(store)[0] <= grown + 20  # the freed pages were used again
    finally:
        await store.close()


async def test_sqlite_log_survives_reopening(tmp_path: Path) -> None:
    first = SqliteRunLog(tmp_path / "c.db")
    await first.append("r", [submitted("r")])
    await first.close()
    second = SqliteRunLog(tmp_path / "c.db")
    assert [r.run_id for r in await second.runs()] == ["r"]
    assert await second.append("r", [submitted("r")]) == [False]
    await second.close()


async def test_a_homes_unfinished_runs_are_found_without_reading_its_finished_ones(
    tmp_path: Path,
) -> None:
    """A served home looks for unfinished runs every few seconds, among however many
    finished ones it keeps: the lookup goes through an index of the unfinished alone."""
    store = SqliteRunLog(tmp_path / "c.db")
    await store.append("done", [submitted("done")])
    await store.append("done", [RunCompleted(run_id="done", at=2.0, state="succeeded")])
    await store.append("open", [submitted("open")])
    assert await store.running() == ["open"]
    plan = store._db.execute(f"EXPLAIN QUERY PLAN {UNFINISHED_RUNS}", (None, None)).fetchall()
    assert "USING INDEX runs_unfinished" in str(plan), plan
    await store.close()


async def test_snapshot_then_tail(store: RunStore) -> None:
    await store.append("r", [submitted("r"), TaskDispatched(run_id="r", at=2.0, task="a")])
    blob, events = await store.load("r")
    assert blob is None and len(events) == 2
    assert await store.save_snapshot("r", b"state-after-2")
    later = TaskSucceeded(run_id="r", at=3.0, task="a", result=1)
    await store.append("r", [later])
    blob, events = await store.load("r")
    assert blob == b"state-after-2" and events == [later]
    assert await store.running() == ["r"]


async def test_read_after_a_position_returns_only_what_is_new(store: RunStore) -> None:
    first = [submitted("r1"), TaskDispatched(run_id="r1", at=2.0, task="a")]
    later = [
        TaskSucceeded(run_id="r1", at=3.0, task="a", result=1),
        TaskDispatched(run_id="r1", at=4.0, task="b"),
        TaskSucceeded(run_id="r1", at=5.0, task="b", result=2),
    ]
    await store.append("r1", first)
    await store.append("r1", later[:1], then=later[1:])
    everything = [*first, *later]
    for seen in range(len(everything) + 1):
        assert await store.read("r1", after=seen) == everything[seen:]
    # A repeated append adds nothing, so positions stay where they were.
    await store.append("r1", later)
    assert await store.read("r1", after=len(everything)) == []


async def test_a_read_takes_at_most_its_limit_from_its_position(store: RunStore) -> None:
    # Appends of one, three and two events: a limit may end inside an append.
    events: list[Any] = [submitted("r1")]
    events += [TaskDispatched(run_id="r1", at=float(i), task=f"t{i}") for i in range(5)]
    await store.append("r1", events[:1])
    await store.append("r1", events[1:4])
    await store.append("r1", events[4:])
    for after in range(len(events) + 1):
        for limit in (1, 2, 3, 10):
            got = await store.read("r1", after=after, limit=limit)
            assert got == events[after : after + limit], (after, limit)
    paged: list[Any] = []
    while page := await store.read("r1", after=len(paged), limit=2):
        paged += page
    assert paged == events


async def test_a_follower_waits_for_new_events(store: RunStore) -> None:
    await store.append("r1", [submitted("r1")])
    assert await store.wait_for_events("r1", after=0, timeout=0.01) is True
    assert await store.wait_for_events("r1", after=1, timeout=0.05) is False

    waiting = asyncio.create_task(store.wait_for_events("r1", after=1, timeout=10))
    await asyncio.sleep(0)  # let it start waiting before the append
    assert not waiting.done()
    await store.append("r1", [TaskDispatched(run_id="r1", at=2.0, task="a")])
    assert await asyncio.wait_for(waiting, 5) is True
    assert await store.read("r1", after=1) == [TaskDispatched(run_id="r1", at=2.0, task="a")]


async def test_a_follower_of_a_run_not_yet_started_waits_for_it(store: RunStore) -> None:
    assert await store.read("later", after=1) == []
    waiting = asyncio.create_task(store.wait_for_events("later", after=0, timeout=10))
    await asyncio.sleep(0)
    await store.append("later", [submitted("later")])
    assert await asyncio.wait_for(waiting, 5) is True


async def test_runs_page_with_a_cursor_newest_first(store: RunStore) -> None:
    # Two runs share a submission time: the cursor still neither skips nor repeats one.
    times = {"r1": 1.0, "r2": 2.0, "r3": 2.0, "r4": 3.0, "r5": 4.0}
    for run_id, at in times.items():
        await store.append(run_id, [submitted(run_id, at=at)])
    seen: list[str] = []
    before = None
    while True:
        page = await store.runs(limit=2, before=before)
        if not page:
            break
        seen += [r.run_id for r in page]
        before = (page[-1].submitted_at, page[-1].run_id)
    assert seen == ["r5", "r4", "r3", "r2", "r1"]
    assert [r.run_id for r in await store.runs(workflow="wf", limit=10, before=(2.0, "r3"))] == [
        "r2",
        "r1",
    ]


async def submit_started_by(store: RunStore, triggers: dict[str, str]) -> None:
    """One run per id, each started by its trigger, one second after the one before."""
    for n, (run_id, trigger) in enumerate(triggers.items(), start=1):
        event = RunSubmitted(
            run_id=run_id, at=float(n), workflow={"name": "wf"}, params={}, trigger=trigger
        )
        await store.append(run_id, [event])


async def test_runs_filter_by_trigger_and_time(store: RunStore) -> None:
    triggers = {"r1": "cli", "r2": "webhook:push", "r3": "webhook:merge", "r4": "schedule:nightly"}
    await submit_started_by(store, triggers)
    assert [r.run_id for r in await store.runs(trigger="webhook")] == ["r3", "r2"]
    assert [r.run_id for r in await store.runs(trigger="webhook:push")] == ["r2"]
    assert [r.trigger for r in await store.runs(since=2.0, until=3.0)] == [
        "webhook:merge",
        "webhook:push",
    ]
    assert [r.run_id for r in await store.runs(since=3.5)] == ["r4"]


async def test_a_list_of_top_level_runs_leaves_out_child_runs(store: RunStore) -> None:
    await submit_started_by(store, {"p": "cli", "c1": "parent:p", "c2": "parent:p", "w": "api"})
    assert [r.run_id for r in await store.runs()] == ["w", "c2", "c1", "p"]
    assert [r.run_id for r in await store.runs(top_level=True)] == ["w", "p"]
    assert [r.run_id for r in await store.runs(top_level=True, limit=1)] == ["w"]
    after_w = await store.runs(top_level=True, before=(4.0, "w"))
    assert [r.run_id for r in after_w] == ["p"]
    assert [r.run_id for r in await store.runs(top_level=True, workflow="wf")] == ["w", "p"]
    assert [r.run_id for r in await store.runs(top_level=True, state="running")] == ["w", "p"]
    assert [r.run_id for r in await store.runs(trigger="parent:p")] == ["c2", "c1"]
    # A deleted run leaves the list of top-level runs too.
    await store.append("w", [RunCompleted(run_id="w", at=5.0, state=RunStatus.SUCCEEDED)])
    assert await store.delete("w")
    assert [r.run_id for r in await store.runs(top_level=True)] == ["p"]


async def test_redis_lists_the_top_level_runs_made_before_it_kept_them(redis_url: str) -> None:
    store = RedisRunLog(redis_url)
    try:
        await store._redis.flushdb()
        await submit_started_by(store, {"old": "cli", "old-child": "parent:old", "older": ""})
        # As a run log written before the list was kept: no list, no mark of one.
        await store._redis.delete(TOP_LEVEL_RUNS, TOP_LEVEL_BUILT)
        await store._redis.hdel(key("older", "summary"), "trigger")
        assert [r.run_id for r in await store.runs(top_level=True)] == ["older", "old"]
        assert await store._redis.exists(TOP_LEVEL_BUILT)
        new = RunSubmitted(run_id="new", at=9.0, workflow={"name": "wf"}, params={}, trigger="api")
        await store.append("new", [new])
        assert [r.run_id for r in await store.runs(top_level=True)] == ["new", "older", "old"]
        # Child runs are kept out of the list itself, not only filtered out of what it
        # gives: a list of top-level runs does not read through thousands of them.
        child = RunSubmitted(
            run_id="new-child", at=10.0, workflow={"name": "wf"}, params={}, trigger="parent:new"
        )
        await store.append("new-child", [child])
        listed = {m.decode() for m in await store._redis.zrange(TOP_LEVEL_RUNS, 0, -1)}
        assert listed == {"new", "older", "old"}
    finally:
        await store._redis.flushdb()
        await store.close()


async def test_a_home_made_before_runs_kept_their_trigger_still_opens(tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "c.db")
    old.executescript(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, state TEXT NOT NULL,"
        " submitted_at REAL NOT NULL, finished_at REAL, reason TEXT NOT NULL DEFAULT '');"
        "INSERT INTO runs VALUES ('old1', 'wf', 'succeeded', 1.0, 2.0, '');"
    )
    old.commit()
    old.close()
    store = SqliteRunLog(tmp_path / "c.db")
    try:
        await store.append("new1", [submitted("new1", at=3.0)])
        rows = await store.runs()
        assert [(r.run_id, r.trigger) for r in rows] == [("new1", "cli"), ("old1", "")]
    finally:
        await store.close()


async def test_the_shard_map_is_stored_once_and_changed_atomically(store: RunStore) -> None:
    first = await store.shard_map(2)
    assert (first.count, first.queues) == (2, 2)
    # A later reader with another default gets the stored map, not its own.
    assert await store.shard_map(8) == first
    grown = await store.reshard(4)
    assert (grown.count, grown.queues, grown.epoch) == (4, 4, first.epoch + 1)
    shrunk = await store.reshard(3)
    # Runs pinned to the fourth shard must still finish: its queue is still consumed.
    assert (shrunk.count, shrunk.queues) == (3, 4)
    assert await store.shard_map(2) == shrunk
    racing = await asyncio.gather(*(store.reshard(5) for _ in range(4)))
    assert sorted(m.epoch for m in racing) == [shrunk.epoch + n for n in (1, 2, 3, 4)]


async def test_running_runs_are_listed_by_the_shard_they_are_pinned_to(store: RunStore) -> None:
    for run_id, shard in [("a", 0), ("b", 3), ("c", 3), ("d", None)]:
        event = RunSubmitted(run_id=run_id, at=1.0, workflow={"name": "wf"}, params={}, shard=shard)
        await store.append(run_id, [event])
    await store.append("c", [RunCompleted(run_id="c", at=2.0, state="succeeded")])
    assert sorted(await store.running()) == ["a", "b", "d"]
    assert await store.running(3) == ["b"]
    assert await store.running(0) == ["a"]
    assert await store.running(1) == []
    summary = await store.summary("b")
    assert summary is not None and summary.shard == 3
    assert (await store.summary("d")) is not None
    assert await store.summary("nobody") is None
    # A finished run that is retried is running on its shard again.
    await store.append("c", [RunRetryRequested(run_id="c", at=3.0, round=1)])
    assert sorted(await store.running(3)) == ["b", "c"]


async def test_run_state_changes_stay_unannounced_until_marked(store: RunStore) -> None:
    """A submission and a completion are owed to the world once appended: they stay
    listed, across appends of the same events again, until marked announced."""
    a = RunSubmitted(run_id="a", at=1.0, workflow={"name": "wf"}, params={}, shard=0)
    b = RunSubmitted(run_id="b", at=2.0, workflow={"name": "wf"}, params={}, shard=1)
    done = RunCompleted(run_id="a", at=3.0, state="failed", reason="x")
    await store.append("a", [a], then=[TaskDispatched(run_id="a", at=1.0, task="t")])
    await store.append("b", [b])
    await store.append("a", [TaskSucceeded(run_id="a", at=2.5, task="t"), done])
    await store.append("a", [a, done])  # redelivered: owed once
    assert await store.unannounced() == [a, b, done]
    assert await store.unannounced(0) == [a, done]
    assert await store.unannounced(1) == [b]
    assert await store.unannounced(2) == []
    assert await store.unannounced(before=2.0) == [a]
    assert await store.unannounced(before=3.0) == [a, b]
    assert await store.unannounced(0, before=3.5) == [a, done]

    await store.announced([a.id, done.id, "a/never-appended"])
    assert await store.unannounced() == [b]
    await store.append("a", [done])  # already in the log: not owed again
    assert await store.unannounced() == [b]
    # A retried run's next completion is a change of its own.
    again = RunCompleted(run_id="a", at=5.0, state="succeeded", round=1)
    await store.append("a", [RunRetryRequested(run_id="a", at=4.0, round=1), again])
    assert await store.unannounced(0) == [again]
    await store.announced([])
    assert await store.unannounced() == [b, again]


async def test_sqlite_keeps_unannounced_changes_across_reopening(tmp_path: Path) -> None:
    first = SqliteRunLog(tmp_path / "c.db")
    await first.append("r", [submitted("r")])
    await first.close()
    second = SqliteRunLog(tmp_path / "c.db")
    assert await second.unannounced() == [submitted("r")]
    await second.close()


async def test_redis_forgets_an_unannounced_id_whose_mark_went_half_through(
    redis_url: str,
) -> None:
    """A mark removes the body, then the id: an id left without its body is announced
    already, and is cleared the next time the changes left are looked for."""
    store = RedisRunLog(redis_url)
    await store._redis.flushdb()
    await store.append("r", [submitted("r")])
    await store._redis.hdel(UNANNOUNCED_BODIES, "r/run_submitted")
    assert await store.unannounced() == []
    assert await store._redis.zcard(UNANNOUNCED) == 0
    await store.close()


async def test_a_run_is_found_only_by_text_an_id_can_start_with(store: RunStore) -> None:
    """An empty prefix would match the only run there is, and Redis reads * and ? in a
    key pattern: neither finds a run, on any store."""
    from engine.client import Client

    await store.append("bbb3", [submitted("bbb3")])
    client = Client(store)
    assert await client.find("bbb") == "bbb3"
    for text in ("", "*", "b*", "?bb3", "[b]bb3", "bbb3 ", "bbb3}"):
        with pytest.raises(NotFound, match="a run id is letters, digits, _ and -"):
            await client.find(text)
