"""The engine on a real three-node RabbitMQ cluster: the node leading a coordinator
shard's quorum queue stops in the middle of a 10,000-item run; the run finishes, each
task succeeds once, and the clients carry on with the surviving nodes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.errors import NotFound
from contracts.topology import DEAD_LETTER_QUEUE, shard_of, shard_queue
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from engine.redis_timers import RedisTimers
from engine.runlog.redis import RedisRunLog
from engine.transport.rabbitmq import RabbitTransport
from tests.clusters import LocalRabbitCluster

# The queue must have a member on every node before one stops: a quorum queue declared
# while a node was still booting gets two members, and losing its leader then loses the
# majority (every publish is refused). The fixture waits for every node to boot, and the
# test checks the members before it stops one.
pytestmark = [pytest.mark.timeout(300), pytest.mark.rabbitmq_cluster]

ITEMS = 10_000
SHARDS = 2


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[LocalRabbitCluster]:
    # In the system's /tmp: RabbitMQ runs as its own user, outside pytest's folders.
    base = Path(tempfile.mkdtemp(prefix="conveyor-rabbit-cluster-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = LocalRabbitCluster(base)
    cluster.start()
    yield cluster
    cluster.stop()


WORKFLOW = f"""
name: across-a-node
tasks:
  - name: each
    items: "{{{{ range({ITEMS}) }}}}"
    python: teststeps:add
    args: {{a: "{{{{ item }}}}", b: 1}}
  - name: total
    depends: [each]
    python: teststeps:total
    args: {{values: "{{{{ tasks.each.outputs.result }}}}"}}
"""


async def test_a_run_finishes_when_the_node_leading_its_shard_stops(
    rabbit_cluster: LocalRabbitCluster, redis_url: str
) -> None:
    store = RedisRunLog(redis_url)
    await store._redis.flushdb()
    transport = RabbitTransport(rabbit_cluster.urls)
    reconnects: list[str] = []
    transport.on_reconnect(lambda: reconnects.append("again"))
    await transport.start()
    workflow = parse_workflow(WORKFLOW)
    try:
        async with EmbeddedEngine(
            store,
            workers=4,
            transport=transport,
            timers=lambda fire: RedisTimers(redis_url, fire, time.time),
            shards=SHARDS,
        ) as engine:
            run_id = await engine.submit(workflow, {})
            seen = 0
            while seen < ITEMS // 3:  # a third of the way
                with contextlib.suppress(NotFound):
                    seen = len(await store.read(run_id))
                await asyncio.sleep(0.05)
            queue = shard_queue(shard_of(run_id, SHARDS))
            assert len(await asyncio.to_thread(rabbit_cluster.members_of, queue)) == 3
            leader = await asyncio.to_thread(rabbit_cluster.leader_of, queue)
            connection: Any = transport._connection
            on_the_stopped_node = connection.url.port == leader.port
            stopped_at = time.monotonic()
            await asyncio.to_thread(leader.stop)
            state: Any = await asyncio.wait_for(engine.coordinator.wait(run_id), 120)
            print(f"\n[recovery] node {leader.node} stopped -> run finished in"
                  f" {time.monotonic() - stopped_at:.1f}s")  # fmt: skip
            # No message was given up on (the engine closes the transport as it stops).
            assert await transport.queue_depth(DEAD_LETTER_QUEUE) == 0
            if on_the_stopped_node:  # the client moved to a surviving node
                assert reconnects and connection.url.port != leader.port
        assert state.status == "succeeded", state.reason
        assert state.nodes["total"].outputs()["result"] == sum(range(1, ITEMS + 1))
        events = await store.read(run_id)
        succeeded = [(e.task, e.index) for e in events if e.kind == "task_succeeded"]
        assert len(succeeded) == len(set(succeeded)) == ITEMS + 1  # each task once
    finally:
        await transport.close()
        await store.close()
