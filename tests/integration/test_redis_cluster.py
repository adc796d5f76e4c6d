"""The run log on a real Redis Cluster (three masters, a replica each), through a
failover of the master that holds a run: nothing appended is lost or doubled, and a
whole distributed run finishes across it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from contracts.errors import NotFound
from contracts.events import RunSubmitted, TaskDispatched
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from engine.redis_timers import RedisTimers
from engine.runlog.redis import RedisRunLog, key
from engine.transport.rabbitmq import RabbitTransport
from tests.clusters import LocalRedisCluster


async def failover(cluster: LocalRedisCluster, run_id: str) -> tuple[int, int]:
    """Hand the slot of ``run_id``'s keys from its master to that master's replica."""
    master = cluster.master_of_slot_key(key(run_id, "events"))
    replica = cluster.replica_of(master)
    assert "OK" in await asyncio.to_thread(cluster.cli, replica, "cluster", "failover")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        roles = await asyncio.to_thread(cluster.roles)
        if roles.get(replica) == "master" and roles.get(master) == "slave":
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"no failover from {master} to {replica}")
    await asyncio.to_thread(cluster.wait_until_ok)
    return master, replica


async def test_appends_survive_a_failover_of_their_master(
    redis_cluster: LocalRedisCluster,
) -> None:
    store = RedisRunLog(redis_cluster.url)
    run_id = "failover-append"
    try:
        await store.append(
            run_id,
            [RunSubmitted(run_id=run_id, at=0.0, workflow={"name": "failover-w"}, params={})],
        )
        sent: list[TaskDispatched] = []
        moved = False
        for i in range(400):
            event = TaskDispatched(run_id=run_id, at=float(i), task=f"t{i}")
            assert await store.append(run_id, [event]) == [True]
            sent.append(event)
            if i == 150:
                before, after = await failover(redis_cluster, run_id)
                moved = before != after
        assert moved
        events = await store.read(run_id)
        assert [e.id for e in events[1:]] == [e.id for e in sent]  # all, once, in order
        # The run index too (by workflow: runs of other tests may share the cluster).
        assert [r.run_id for r in await store.runs(workflow="failover-w")] == [run_id]
    finally:
        await store.close()


WORKFLOW = """
name: across-a-failover
tasks:
  - name: each
    items: "{{ range(300) }}"
    python: teststeps:add
    args: {a: "{{ item }}", b: 1}
  - name: total
    depends: [each]
    python: teststeps:total
    args: {values: "{{ tasks.each.outputs.result }}"}
"""


async def test_a_distributed_run_finishes_across_a_failover(
    redis_cluster: LocalRedisCluster, amqp_url: str
) -> None:
    store = RedisRunLog(redis_cluster.url)
    transport = RabbitTransport(amqp_url)
    await transport.start()
    workflow = parse_workflow(WORKFLOW)
    try:
        async with EmbeddedEngine(
            store,
            workers=2,
            transport=transport,
            timers=lambda fire: RedisTimers(redis_cluster.url, fire, time.time),
            shards=2,
        ) as engine:
            run_id = await engine.submit(workflow, {})
            seen = 0
            while seen < 100:  # the fan-out is well under way
                with contextlib.suppress(NotFound):  # until the coordinator has it
                    seen = len(await store.read(run_id))
                await asyncio.sleep(0.01)
            await failover(redis_cluster, run_id)
            state: Any = await asyncio.wait_for(engine.coordinator.wait(run_id), 120)
        assert state.status == "succeeded", state.reason
        assert state.nodes["total"].outputs()["result"] == sum(range(1, 301))
        events = await store.read(run_id)
        succeeded = [(e.task, e.index) for e in events if e.kind == "task_succeeded"]
        assert len(succeeded) == len(set(succeeded)) == 301  # each task once in the log
    finally:
        await transport.close()
        await store.close()
