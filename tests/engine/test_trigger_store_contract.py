"""Behaviour every trigger store must have: memory, SQLite and Redis alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from contracts.errors import NotFound
from contracts.ports import TriggerRecord, TriggerStore
from engine.triggers.stores.memory import MemoryTriggerStore
from engine.triggers.stores.redis import RedisTriggerStore
from engine.triggers.stores.sqlite import SqliteTriggerStore
from tests.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(1_000.0)


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[TriggerStore]:
    s: TriggerStore
    if request.param == "memory":
        s = MemoryTriggerStore(clock)
    elif request.param == "sqlite":
        s = SqliteTriggerStore(tmp_path / "c.db", clock)
    elif request.param == "redis":
        s = RedisTriggerStore(request.getfixturevalue("redis_url"), clock)
        await s._redis.flushdb()
    else:
        s = RedisTriggerStore(request.getfixturevalue("redis_cluster").url, clock)
        await s._redis.flushdb(target_nodes=RedisCluster.PRIMARIES)
    yield s
    await s.close()


async def test_versions_are_kept_and_a_known_document_keeps_its_version(
    store: TriggerStore,
) -> None:
    assert await store.register("etl", b"v1") == 1
    assert await store.register("etl", b"v2") == 2
    assert await store.register("etl", b"v1") == 1
    assert await store.register("other", b"x") == 1
    assert await store.workflow("etl") == (2, b"v2")
    assert await store.workflow("etl", 1) == (1, b"v1")
    assert await store.workflows() == {"etl": 2, "other": 1}
    with pytest.raises(NotFound):
        await store.workflow("etl", 3)
    with pytest.raises(NotFound):
        await store.workflow("missing")


async def test_an_arrival_is_admitted_once_until_its_key_lapses(
    store: TriggerStore, clock: Clock
) -> None:
    assert await store.admit("hook:a", b"one", keep=60)
    assert not await store.admit("hook:a", b"again", keep=60)
    assert await store.pending() == [("hook:a", b"one")]
    await store.settle("hook:a")
    assert await store.pending() == []
    # Settled, but still remembered: a redelivery within the window is a duplicate.
    assert not await store.admit("hook:a", b"again", keep=60)
    clock.now += 61
    assert await store.admit("hook:a", b"later", keep=60)
    assert await store.pending() == [("hook:a", b"later")]


async def test_a_burst_of_arrivals_is_admitted_whole(store: TriggerStore) -> None:
    # More at once than a client's connection pool holds (a webhook server catching up
    # after a pause): each waits its turn rather than failing.
    burst = 500

    async def arrive(n: int) -> bool:
        admitted = await store.admit(f"hook:{n}", b"x", keep=60)
        await store.record(
            TriggerRecord(at=float(n), workflow="etl", trigger="push", kind="webhook", decision="x")
        )
        return admitted

    assert await asyncio.gather(*(arrive(n) for n in range(burst))) == [True] * burst
    assert len(await store.pending()) == burst
    assert len(await store.records("etl", limit=2 * burst)) == burst


async def test_pending_can_leave_out_fresh_arrivals(store: TriggerStore, clock: Clock) -> None:
    await store.admit("old", b"1", keep=60)
    clock.now += 10
    await store.admit("new", b"2", keep=60)
    assert await store.pending(older_than=5) == [("old", b"1")]
    assert [key for key, _ in await store.pending()] == ["old", "new"]


async def test_records_are_newest_first_and_filter_by_trigger(store: TriggerStore) -> None:
    for i, trigger in enumerate(["push", "nightly", "push"]):
        await store.record(
            TriggerRecord(
                at=float(i), workflow="etl", trigger=trigger, kind="webhook", decision="accepted"
            )
        )
    assert [r.at for r in await store.records("etl")] == [2.0, 1.0, 0.0]
    assert [r.at for r in await store.records("etl", "push")] == [2.0, 0.0]
    assert [r.at for r in await store.records("etl", limit=1)] == [2.0]
    assert await store.records("nothing") == []


async def test_cursors_are_kept(store: TriggerStore) -> None:
    assert await store.cursor("sensor:etl:landed") is None
    await store.set_cursor("sensor:etl:landed", b"a")
    await store.set_cursor("sensor:etl:landed", b"b")
    assert await store.cursor("sensor:etl:landed") == b"b"


async def test_sqlite_store_keeps_the_inbox_across_processes(tmp_path: Path) -> None:
    first = SqliteTriggerStore(tmp_path / "c.db")
    await first.admit("k", b"payload", keep=60)
    await first.close()
    second = SqliteTriggerStore(tmp_path / "c.db")
    assert await second.pending() == [("k", b"payload")]
    assert not await second.admit("k", b"payload", keep=60)
    await second.close()
