"""Deleting a run: every store forgets all of it, keeps every other run, and refuses
what would break a run still going. Runs against each implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from contracts.errors import Conflict, NotFound
from contracts.events import (
    RunCompleted,
    RunRetryRequested,
    RunSubmitted,
    TaskDispatched,
    TaskSucceeded,
)
from contracts.ports import LogLine, RunStore, RunSummary
from engine.runlog.redis import RedisRunLog, key
from engine.runlog.redislines import LISTS_PER_LOOK
from engine.runlog.sqlite import SqliteRunLog


def submitted(run_id: str, at: float = 1.0) -> RunSubmitted:
    return RunSubmitted(run_id=run_id, at=at, workflow={"name": "wf"}, params={"n": 1})


def line(run_id: str, task: str = "t", index: int = 0, text: str = "out") -> LogLine:
    return LogLine(
        run_id=run_id, task=task, index=index, attempt=1, stream="stdout", at=1.0, text=text
    )


async def finished_run(store: RunStore, run_id: str, *, at: float = 1.0) -> None:
    """A run that printed, was snapshotted and ended."""
    await store.append(run_id, [submitted(run_id, at)])
    await store.append(run_id, [TaskDispatched(run_id=run_id, at=at + 1, task="t")])
    await store.write_lines([line(run_id, "t", i, f"{run_id}-{i}") for i in range(3)])
    await store.save_snapshot(run_id, b"state")
    done = TaskSucceeded(run_id=run_id, at=at + 2, task="t", result=1)
    await store.append(run_id, [done, RunCompleted(run_id=run_id, at=at + 3, state="succeeded")])


async def test_a_deleted_run_is_gone_from_every_read(store: RunStore) -> None:
    await finished_run(store, "r1")
    assert await store.delete("r1") is True
    with pytest.raises(NotFound):
        await store.read("r1")
    with pytest.raises(NotFound):
        await store.load("r1")
    with pytest.raises(NotFound):
        await store.find_run("r1")
    assert await store.summary("r1") is None
    assert await store.runs() == []
    assert await store.runs(state="succeeded") == []
    assert await store.runs(workflow="wf") == []
    assert await store.read_lines("r1") == []
    assert (await store.page_lines("r1", limit=10)).lines == []
    assert await store.delete("r1") is False  # nothing left to delete


async def test_of_deletions_of_one_run_side_by_side_one_says_it_deleted_it(
    store: RunStore,
) -> None:
    # A pruner deletes a child run on its own and with its parent at once: it counts
    # the run once.
    await finished_run(store, "r1")
    said = await asyncio.gather(*(store.delete("r1") for _ in range(4)))
    assert sorted(said) == [False, False, False, True]
    assert await store.summary("r1") is None and await store.runs() == []


async def test_deleting_a_run_keeps_every_other(store: RunStore) -> None:
    # ``r1`` and ``r10``: one id the start of another; and one run still going.
    for run_id, at in (("r1", 1.0), ("r10", 2.0), ("r2", 3.0)):
        await finished_run(store, run_id, at=at)
    await store.append("going", [submitted("going", 4.0)])
    kept = {run_id: await store.read(run_id) for run_id in ("r10", "r2", "going")}
    await store.delete("r1")
    assert [r.run_id for r in await store.runs()] == ["going", "r2", "r10"]
    assert [r.run_id for r in await store.runs(state="succeeded")] == ["r2", "r10"]
    for run_id, events in kept.items():
        assert await store.read(run_id) == events
    assert [ln.text for ln in await store.read_lines("r10")] == ["r10-0", "r10-1", "r10-2"]
    blob, _ = await store.load("r10")
    assert blob == b"state"
    assert await store.running() == ["going"]


async def test_a_running_run_is_not_deleted(store: RunStore) -> None:
    await store.append("going", [submitted("going")])
    await store.write_lines([line("going")])
    with pytest.raises(Conflict, match="run going is still running"):
        await store.delete("going")
    assert await store.read("going") == [submitted("going")]
    assert len(await store.read_lines("going")) == 1
    # Retried after it ended, it is running again: not deleted either.
    await store.append("going", [RunCompleted(run_id="going", at=2.0, state="failed")])
    await store.append("going", [RunRetryRequested(run_id="going", at=3.0, round=1)])
    with pytest.raises(Conflict):
        await store.delete("going")
    assert [r.run_id for r in await store.runs(state="running")] == ["going"]


async def test_late_events_of_a_deleted_run_do_not_bring_it_back(store: RunStore) -> None:
    await finished_run(store, "r1")
    await store.delete("r1")
    late = TaskSucceeded(run_id="r1", at=9.0, task="t", index=1, result=2)
    assert await store.append(
        "r1", [late], then=[TaskDispatched(run_id="r1", at=9.0, task="u")]
    ) == [
        False,
        False,
    ]
    with pytest.raises(NotFound):
        await store.read("r1")
    assert await store.runs() == []
    # Nor does a run that was never submitted start with anything but its submission.
    assert await store.append("never", [late]) == [False]
    with pytest.raises(NotFound):
        await store.read("never")
    # A submission does open a log, under a deleted run's id too.
    assert await store.append("r1", [submitted("r1", 5.0)]) == [True]
    assert [r.run_id for r in await store.runs()] == ["r1"]


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_store(request: pytest.FixtureRequest) -> AsyncIterator[RedisRunLog]:
    if request.param == "redis":
        store = RedisRunLog(request.getfixturevalue("redis_url"))
        await store._redis.flushdb()
    else:
        store = RedisRunLog(request.getfixturevalue("redis_cluster").url)
        await store._redis.flushdb(target_nodes=RedisCluster.PRIMARIES)
    yield store
    await store.close()


async def test_redis_leaves_no_key_of_a_deleted_run(redis_store: RedisRunLog) -> None:
    """Every key under the run's hash tag goes, task line lists of more items than one
    batch deletes included, and the run's id leaves the index's sorted sets."""
    store = redis_store
    await finished_run(store, "big")
    items = LISTS_PER_LOOK + 500
    await store.write_lines([line("big", "each", i) for i in range(items)])
    await finished_run(store, "other", at=2.0)
    assert len([k async for k in store._redis.scan_iter(match="cv:{big}:*")]) > items
    await store.delete("big")
    assert [k async for k in store._redis.scan_iter(match="cv:{big}:*")] == []
    for index in (b"cv:runs", b"cv:runs:state:succeeded", b"cv:runs:wf:wf"):
        assert await store._redis.zrange(index, 0, -1) == [b"other"]
    assert len(await store.read_lines("other")) == 3


async def test_sqlite_deletes_a_chunk_at_a_time_and_finishes_what_was_cut_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other runs go on between the chunks; a deletion cut short (its process stopped)
    leaves the run marked, refusing appends, and deleting it again finishes it."""
    monkeypatch.setattr("engine.runlog.sqlite.DELETE_CHUNK", 10)
    store = SqliteRunLog(tmp_path / "home.db")
    await finished_run(store, "big")
    await store.write_lines([line("big", "each", i) for i in range(95)])
    await store.append("other", [submitted("other", 2.0)])
    deleting = asyncio.ensure_future(store.delete("big"))
    await asyncio.sleep(0)  # one turn of the loop: the deletion runs to its first chunk's end
    other = TaskDispatched(run_id="other", at=3.0, task="t")
    assert await store.append("other", [other]) == [True]  # between two chunks
    assert not deleting.done()
    deleting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await deleting
    [cut_short] = [row for row in await store.runs() if row.run_id == "big"]
    assert cut_short.state == "deleting"
    assert await store.append("big", [TaskDispatched(run_id="big", at=9.0, task="u")]) == [False]
    assert await store.delete("big") is True
    assert [row.run_id for row in await store.runs()] == ["other"]
    assert store._db.execute("SELECT COUNT(*) FROM task_logs").fetchone() == (0,)
    assert store._db.execute("SELECT COUNT(*) FROM events WHERE run_id = 'big'").fetchone() == (0,)
    assert await store.read("other") == [submitted("other", 2.0), other]
    await store.close()


async def test_redis_keeps_a_run_retried_between_its_check_and_its_deletion(
    redis_store: RedisRunLog,
) -> None:
    """The run was read ended, then retried before its keys went: the script that
    deletes them looks again, and keeps it."""
    store = redis_store
    await finished_run(store, "r1")
    row = await store.summary("r1")
    assert row is not None and row.state == "succeeded"
    await store.append("r1", [RunRetryRequested(run_id="r1", at=8.0, round=1)])
    with pytest.raises(Conflict, match="still running"):
        await store._deletion.delete_read(row)
    assert [r.run_id for r in await store.runs(state="running")] == ["r1"]
    assert (await store.read("r1"))[-1] == RunRetryRequested(run_id="r1", at=8.0, round=1)


async def test_redis_gives_no_row_back_to_a_run_deleted_while_its_index_was_updated(
    redis_store: RedisRunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry's events were appended, and its index row read, just before the run was
    deleted; the row is written after. The deleted run gets no row and no place in the
    index back (it would be listed running, and nothing would drive it)."""
    store = redis_store
    await finished_run(store, "r1")
    stale = await store.summary("r1")
    await store.delete("r1")

    async def read_before_the_deletion(run_id: str) -> RunSummary | None:
        return stale

    monkeypatch.setattr(store, "_summary", read_before_the_deletion)
    retry = RunRetryRequested(run_id="r1", at=8.0, round=1)
    await store._update_index("r1", [retry], [True])
    assert await store._redis.exists(key("r1", "summary")) == 0
    assert await store.running() == []
    assert [k async for k in store._redis.scan_iter(match="cv:runs*")] == []


class CutShort(Exception):
    """The process stopped here."""


async def cut_after_its_keys(store: RedisRunLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delete ``r1``, stopped after its own keys went and before its place in the index."""

    async def stopped(row: RunSummary) -> None:
        raise CutShort

    with monkeypatch.context() as patched:
        patched.setattr(store._deletion, "finish", stopped)
        with pytest.raises(CutShort):
            await store.delete("r1")


INDEX = (b"cv:runs", b"cv:runs:state:succeeded", b"cv:runs:wf:wf")


@pytest.mark.parametrize("finished_by", ["listing", "deleting again"])
async def test_redis_finishes_a_deletion_cut_between_the_run_and_the_index(
    redis_store: RedisRunLog, monkeypatch: pytest.MonkeyPatch, finished_by: str
) -> None:
    """Cut there, the run is not to be seen, and whoever next passes over it in the index
    (a listing, a pruning) or deletes it again takes its id out of the sorted sets."""
    store = redis_store
    await finished_run(store, "r1")
    await finished_run(store, "r2", at=2.0)
    await cut_after_its_keys(store, monkeypatch)
    assert await store.summary("r1") is None
    for index in INDEX:
        assert await store._redis.zscore(index, "r1") is not None
    if finished_by == "listing":
        assert [r.run_id for r in await store.runs()] == ["r2"]
    else:
        assert await store.delete("r1") is True
    for index in INDEX:
        assert await store._redis.zrange(index, 0, -1) == [b"r2"]
    assert [k async for k in store._redis.scan_iter(match="cv:{r1}:*")] == []
    assert await store.delete("r1") is False


async def test_redis_a_run_submitted_anew_after_a_cut_deletion_is_listed(
    redis_store: RedisRunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submission under the id of a run whose deletion was cut (a webhook delivered
    again) writes a row of its own: not marked deleted, and not taken away."""
    store = redis_store
    await finished_run(store, "r1")
    await cut_after_its_keys(store, monkeypatch)
    assert await store.append("r1", [submitted("r1", 5.0)]) == [True]
    assert [(r.run_id, r.state) for r in await store.runs()] == [("r1", "running")]
    assert [(r.run_id, r.state) for r in await store.runs()] == [("r1", "running")]
    # Nor does the end of the cut deletion, should it come after, drop the new row.
    await store._deletion.finish(
        RunSummary(run_id="r1", workflow="wf", state="succeeded", submitted_at=1.0)
    )
    assert await store.summary("r1") is not None
