"""A run's index row put right from its log: where the row follows the events by a round
trip (Redis), a process that died in between left the row behind (no row, so the run
is neither listed nor swept up; or "running" for a run that ended)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from contracts.events import Event, RunCompleted, RunRetryRequested, RunSubmitted, TaskSucceeded
from contracts.ports import RunStore
from contracts.validation import parse_workflow
from contracts.vocabulary import RunStatus
from conveyor.embedded import EmbeddedEngine
from engine.runlog.index import row_of
from engine.runlog.redis import RedisRunLog
from engine.runlog.rediskeys import key
from engine.state import replay


def submitted(run_id: str) -> RunSubmitted:
    return RunSubmitted(
        run_id=run_id,
        at=1.0,
        workflow={"name": "wf", "tasks": [{"name": "a", "script": "true"}]},
        params={},
    )


def late_result(run_id: str) -> TaskSucceeded:
    return TaskSucceeded(run_id=run_id, at=3.0, task="a", attempt=9)


def completed(run_id: str) -> RunCompleted:
    return RunCompleted(run_id=run_id, at=2.0, state=RunStatus.FAILED, reason="boom")


async def test_reindexing_with_the_log_s_own_row_keeps_it(store: RunStore) -> None:
    """Every store: the row its log gives is the row it has (the twins write both
    together, so there is nothing to put right)."""
    run_id = "kept-row"
    await store.append(run_id, [submitted(run_id)])
    await store.append(run_id, [completed(run_id)])
    row = row_of(replay(await store.read(run_id)))
    assert row == await store.summary(run_id)
    assert not await store.reindex(row)
    assert await store.summary(run_id) == row
    assert [r.run_id for r in await store.runs(state="failed")] == [run_id]


@pytest.fixture
async def redis_log(redis_url: str) -> AsyncIterator[RedisRunLog]:
    store = RedisRunLog(redis_url)
    await store._redis.flushdb()
    yield store
    await store._redis.flushdb()
    await store.close()


def rows_held_back(store: RedisRunLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the process died after each append, before its index write."""

    async def not_written(*_args: Any) -> None:
        return None

    monkeypatch.setattr(store, "_update_index", not_written)


async def test_redis_puts_a_row_left_behind_right(
    redis_log: RedisRunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = "row-left-behind"
    rows_held_back(redis_log, monkeypatch)
    await redis_log.append(run_id, [submitted(run_id)])
    assert await redis_log.summary(run_id) is None
    assert await redis_log.unannounced() == []  # left behind with the row
    running = row_of(replay(await redis_log.read(run_id)))
    assert await redis_log.reindex(running)
    assert await redis_log.summary(run_id) == running
    assert [e.kind for e in await redis_log.unannounced()] == ["run_submitted"]
    assert not await redis_log.reindex(running)  # right now: nothing to do
    assert await redis_log.running() == [run_id]
    assert [r.run_id for r in await redis_log.runs(state="running")] == [run_id]

    await redis_log.append(run_id, [completed(run_id)])
    assert (await redis_log.summary(run_id)) == running  # behind: still "running"
    await redis_log.append(run_id, [late_result(run_id)])  # after its end, as late results are
    ended = row_of(replay(await redis_log.read(run_id)))
    assert await redis_log.reindex(ended)
    assert await redis_log.summary(run_id) == ended
    assert [e.kind for e in await redis_log.unannounced()] == ["run_submitted", "run_completed"]
    assert await redis_log.running() == []
    assert await redis_log.runs(state="running") == []
    assert [r.run_id for r in await redis_log.runs(state="failed")] == [run_id]


async def test_redis_leaves_a_run_being_deleted_to_its_deletion(redis_log: RedisRunLog) -> None:
    run_id = "being-deleted"
    await redis_log.append(run_id, [submitted(run_id), completed(run_id)])
    row = await redis_log.summary(run_id)
    assert row is not None
    await redis_log._redis.hset(key(run_id, "summary"), "deleted", "1")  # cut short
    assert not await redis_log.reindex(row)
    assert await redis_log.summary(run_id) is None
    assert await redis_log._redis.hexists(key(run_id, "summary"), "deleted")


async def test_a_run_whose_first_index_write_failed_is_listed_once_taken_up_again(
    redis_log: RedisRunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submission's events are in the log, its index write fails: the message comes
    back, the coordinator rebuilds the run from its log and writes the row."""
    writes = redis_log._update_index
    failed: list[str] = []

    async def fails_once(run_id: str, events: list[Event], added: list[bool]) -> None:
        if not failed:
            failed.append(run_id)
            raise RuntimeError("the process died here")
        await writes(run_id, events, added)

    monkeypatch.setattr(redis_log, "_update_index", fails_once)
    async with EmbeddedEngine(redis_log, workers=2, worker_grace=0.2) as engine:
        workflow = parse_workflow("name: listed\ntasks:\n  - name: a\n    script: echo ok\n")
        run_id = await engine.submit(workflow, {})
        state = await asyncio.wait_for(engine.coordinator.wait(run_id), 30)
    assert failed == [run_id]
    assert state.status == RunStatus.SUCCEEDED
    row = await redis_log.summary(run_id)
    assert row is not None and row.state == "succeeded" and row.workflow == "listed"
    assert [r.run_id for r in await redis_log.runs()] == [run_id]


CHILD = """
name: parent
tasks:
  - name: sub
    workflow:
      spec:
        name: child
        tasks:
          - name: a
            script: echo ok
  - name: after
    depends: [sub]
    script: echo after
"""


async def test_a_child_run_whose_end_went_unrecorded_still_tells_its_parent(
    redis_log: RedisRunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's end is in its log, but its index write (and with it, the record that
    its end is owed an announcement, which tells the parent) failed. Taken up again, the
    child is found behind, and its end is announced then: the parent goes on."""
    writes = redis_log._update_index
    failed: list[str] = []

    async def fails_at_a_child_s_end(run_id: str, events: list[Event], added: list[bool]) -> None:
        ends = [e for e in events if isinstance(e, RunCompleted) and e.parent is not None]
        if ends and not failed:
            failed.append(run_id)
            raise RuntimeError("the process died here")
        await writes(run_id, events, added)

    monkeypatch.setattr(redis_log, "_update_index", fails_at_a_child_s_end)
    async with EmbeddedEngine(redis_log, workers=2, worker_grace=0.2) as engine:
        run_id = await engine.submit(parse_workflow(CHILD), {})
        state = await asyncio.wait_for(engine.coordinator.wait(run_id), 30)
    assert len(failed) == 1 and failed[0] != run_id
    assert state.status == RunStatus.SUCCEEDED
    assert state.nodes["sub"].instances[0].attempt == 1
    child = await redis_log.summary(failed[0])
    assert child is not None and child.state == "succeeded"
    assert await redis_log.unannounced() == []  # announced, then marked


async def test_redis_keeps_the_latest_end_of_a_retried_run_owed(
    redis_log: RedisRunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = "retried-behind"
    await redis_log.append(run_id, [submitted(run_id), completed(run_id)])
    await redis_log.announced([e.id for e in await redis_log.unannounced()])
    rows_held_back(redis_log, monkeypatch)
    again = RunRetryRequested(run_id=run_id, at=4.0, round=1)
    ended_again = RunCompleted(run_id=run_id, at=5.0, state=RunStatus.SUCCEEDED, round=1)
    await redis_log.append(run_id, [again], then=[ended_again])
    assert (await redis_log.summary(run_id)).state == "failed"  # the first end's
    row = row_of(replay(await redis_log.read(run_id)))
    assert (row.state, row.finished_at) == ("succeeded", 5.0)
    assert await redis_log.reindex(row)
    assert await redis_log.summary(run_id) == row
    assert [e.id for e in await redis_log.unannounced()] == [ended_again.id]


async def test_redis_puts_right_only_the_course_of_a_run_that_has_a_row(
    redis_log: RedisRunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state rebuilt from a snapshot made before a field existed lacks it: the row's
    trigger and shard, written from the submission itself, are kept."""
    run_id = "older-snapshot"
    hooked = msgspec.structs.replace(submitted(run_id), trigger="webhook:push", shard=1)
    await redis_log.append(run_id, [hooked])
    rows_held_back(redis_log, monkeypatch)
    await redis_log.append(run_id, [completed(run_id)])
    from_an_older_snapshot = msgspec.structs.replace(
        row_of(replay(await redis_log.read(run_id))), trigger="", shard=None
    )
    assert await redis_log.reindex(from_an_older_snapshot)
    row = await redis_log.summary(run_id)
    assert row is not None
    assert (row.state, row.finished_at, row.reason) == ("failed", 2.0, "boom")
    assert (row.trigger, row.shard) == ("webhook:push", 1)
    assert await redis_log.running(1) == []
    assert [r.run_id for r in await redis_log.runs(trigger="webhook:push")] == [run_id]
