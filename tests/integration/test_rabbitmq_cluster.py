"""The engine on a real three-node RabbitMQ cluster: the node leading a coordinator
shard's quorum queue stops in the middle of a 10,000-item run; the run finishes, each
task succeeds once, and the clients carry on with the surviving nodes. Before it,
publishes through a node that stops reach every queue it led again."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from contracts.errors import NotFound
from contracts.topology import DEAD_LETTER_QUEUE, shard_of, shard_queue
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from engine.redis_timers import RedisTimers
from engine.runlog.redis import RedisRunLog
from engine.state.model import RunState
from engine.transport.rabbitmq import RabbitTransport
from tests.clusters import LocalRabbitCluster
from tests.services import server_folder

# The queue must have a member on every node before one stops: a quorum queue declared
# while a node was still booting gets two members, and losing its leader then loses the
# majority (every publish is refused). The fixture waits for every node to boot, and the
# test checks the members before it stops one.
pytestmark = [pytest.mark.timeout(300), pytest.mark.rabbitmq_cluster]

ITEMS = 10_000
SHARDS = 2


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[LocalRabbitCluster]:
    base = server_folder("conveyor-rabbit-cluster-")
    cluster = LocalRabbitCluster(base)
    started = time.monotonic()
    cluster.start()
    print(f"\n[phase] the cluster forming: {time.monotonic() - started:.1f}s")
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@contextlib.asynccontextmanager
async def phase(what: str, seconds: float | None) -> AsyncIterator[asyncio.Timeout]:
    """Fails the test naming ``what`` if it takes longer than ``seconds`` (None: no
    limit until the caller reschedules it), so a hang says where it is instead of
    running into the whole test's timeout."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds) as limit:
            yield limit
    except TimeoutError:
        for task in asyncio.all_tasks():  # where each is waiting: what the hang is
            print(f"\n[task] {task.get_name()}")
            task.print_stack(file=sys.stdout)
        pytest.fail(f"{what} took too long")
    print(f"\n[phase] {what}: {time.monotonic() - started:.1f}s")


async def test_publishes_reach_every_queue_again_when_the_node_they_went_through_stops(
    rabbit_cluster: LocalRabbitCluster,
) -> None:
    """RabbitMQ 3.10 can refuse every publish to a quorum queue on a channel reopened
    while the queue elected a new leader; publishing must not stay stuck there."""
    # Shard queues (single active consumer) are the ones seen stuck; beyond the shards
    # the other test uses.
    queues = [shard_queue(SHARDS + n) for n in range(6)]
    first = rabbit_cluster.nodes[0]
    transport = RabbitTransport(rabbit_cluster.urls)  # goes to the first node first
    await transport.start()
    confirmed = dict.fromkeys(queues, 0)

    async def keep_publishing(queue: str) -> None:
        while True:
            await transport.publish(queue, [b"probe"] * 20)
            confirmed[queue] += 20

    publishers = [asyncio.create_task(keep_publishing(queue)) for queue in queues]
    try:
        async with phase("publishing to every queue", 30):
            while not all(confirmed.values()):
                await asyncio.sleep(0.05)
        leaders = {q: leader for q, (_, leader) in (await cluster_queues(rabbit_cluster)).items()}
        assert all(leaders[queue] == first.node for queue in queues), leaders
        async with phase(f"stopping node {first.node}", 90):
            await asyncio.to_thread(first.stop)
        at_stop = dict(confirmed)
        async with phase("every queue taking publishes again", 60):
            while any(confirmed[q] < at_stop[q] + 200 for q in queues):
                # A publisher ends only by failing: say how, rather than wait out the phase.
                if stopped := [p for p in publishers if p.done()]:
                    pytest.fail(f"a publisher stopped: {stopped[0]!r}")
                await asyncio.sleep(0.05)
    finally:
        for publisher in publishers:
            publisher.cancel()
        await asyncio.gather(*publishers, return_exceptions=True)
        await transport.close()
        await asyncio.to_thread(rabbit_cluster.restart, first)


async def cluster_queues(cluster: LocalRabbitCluster) -> dict[str, tuple[list[str], str]]:
    queues = await asyncio.to_thread(cluster.queues)
    print(f"\n[queues] {queues}")
    return queues


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
    await transport.start()
    workflow = parse_workflow(WORKFLOW)
    engine = EmbeddedEngine(
        store,
        workers=4,
        transport=transport,
        timers=lambda fire: RedisTimers(redis_url, fire, time.time),
        shards=SHARDS,
    )
    try:
        async with phase("the engine's whole life", None) as life, engine:
            try:
                run_id = await engine.submit(workflow, {})
                await a_third_done(store, run_id)
                state = await stop_the_shard_leader(rabbit_cluster, engine, run_id)
                # No message was given up on (the engine closes the transport as it stops).
                assert await transport.queue_depth(DEAD_LETTER_QUEUE) == 0
            finally:  # however the run went, stopping the engine is bounded too
                life.reschedule(asyncio.get_running_loop().time() + 60)
        assert state.status == "succeeded", state.reason
        assert state.nodes["total"].outputs()["result"] == sum(range(1, ITEMS + 1))
        events = await store.read(run_id)
        succeeded = [(e.task, e.index) for e in events if e.kind == "task_succeeded"]
        assert len(succeeded) == len(set(succeeded)) == ITEMS + 1  # each task once
    finally:
        await transport.close()
        await store.close()


async def a_third_done(store: RedisRunLog, run_id: str) -> None:
    async with phase("the run reaching a third of its items", 120):
        read, done = 0, 0
        while done < ITEMS // 3:
            with contextlib.suppress(NotFound):
                events = await store.read(run_id, after=read)
                read += len(events)
                done += sum(e.kind == "task_succeeded" for e in events)
            await asyncio.sleep(0.05)


async def stop_the_shard_leader(
    cluster: LocalRabbitCluster, engine: EmbeddedEngine, run_id: str
) -> RunState:
    """Stops the node leading the run's shard queue; the run's end state."""
    queues = await cluster_queues(cluster)
    # Every queue keeps a majority when one node stops: the run's shard queue, the
    # task queue, the dead-letter queue.
    assert all(len(members) == cluster.size for members, _leader in queues.values()), queues
    leader_name = queues[shard_queue(shard_of(run_id, SHARDS))][1]
    leader = next(node for node in cluster.nodes if node.node == leader_name)
    transport: Any = engine.transport
    reconnects: list[None] = []
    transport.on_reconnect(lambda: reconnects.append(None))
    on_the_stopped_node = transport._connection.url.port == leader.port
    stopped_at = time.monotonic()
    async with phase(f"stopping node {leader.node}", 90):
        await asyncio.to_thread(leader.stop)
    async with phase("the run finishing after the stop", 120):
        state = await engine.wait(run_id)
    print(f"\n[recovery] node {leader.node} stopped -> run finished in"
          f" {time.monotonic() - stopped_at:.1f}s")  # fmt: skip
    if on_the_stopped_node:  # the client moved to a surviving node
        assert reconnects and transport._connection.url.port != leader.port
    return state
