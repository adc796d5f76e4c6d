"""The whole engine in one process, on the in-memory twins and on real servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from contracts.ports import RunStore
from contracts.topology import DEAD_LETTER_QUEUE, shard_queue, task_queue
from conveyor.embedded import EmbeddedEngine
from engine.redis_timers import RedisTimers
from engine.runlog.memory import MemoryRunLog
from engine.runlog.redis import RedisRunLog
from engine.runlog.sqlite import SqliteRunLog
from engine.transport.rabbitmq import RabbitTransport
from tests.amqp import amqp_channel

STOP_LIMIT = 60
"""Seconds the engine on real servers has to stop, and its queues to be purged."""


@pytest.fixture(params=["memory", "rabbitmq+redis"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[EmbeddedEngine]:
    """The whole engine in one process: on the in-memory twins, and on real servers."""
    if request.param == "memory":
        async with EmbeddedEngine(workers=4, worker_grace=0.2) as e:
            yield e
        return
    amqp_url, redis_url = request.getfixturevalue("amqp_url"), request.getfixturevalue("redis_url")
    store = RedisRunLog(redis_url)
    await store._redis.flushdb()
    await purge(amqp_url)
    transport = RabbitTransport(amqp_url, delivery_limit=5)
    e = EmbeddedEngine(
        store,
        workers=4,
        worker_grace=0.2,
        transport=transport,
        timers=lambda fire: RedisTimers(redis_url, fire, time.time),
        shards=2,
    )
    await e.start()
    yield e
    # Bounded, so that a stop that hangs fails with the await it hangs in (pytest's own
    # timeout shows only the event loop waiting).
    async with asyncio.timeout(STOP_LIMIT):
        await e.stop()
    async with asyncio.timeout(STOP_LIMIT):
        await store.close()
        # Its queues carry this fixture's delivery limit: gone, so that a later test's
        # engine with the default declares them afresh.
        await purge(amqp_url)


async def purge(amqp_url: str) -> None:
    """Start from empty queues (the engine declares them again as it starts)."""
    async with amqp_channel(amqp_url) as channel:
        shards = [shard_queue(n) for n in range(8)]  # (tests that reshard use more than 2)
        for name in [*shards, task_queue("default"), DEAD_LETTER_QUEUE]:
            await channel.queue_delete(name)


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    """Each run store, empty (the run-log contract and what reads through it)."""
    s: RunStore
    if request.param == "memory":
        s = MemoryRunLog()
    elif request.param == "sqlite":
        s = SqliteRunLog(tmp_path / "c.db")
    elif request.param == "redis":
        s = RedisRunLog(request.getfixturevalue("redis_url"))
        await s._redis.flushdb()  # a clean index for each test on the shared server
    else:
        s = RedisRunLog(request.getfixturevalue("redis_cluster").url)
        await s._redis.flushdb(target_nodes=RedisCluster.PRIMARIES)
    yield s
    await s.close()
