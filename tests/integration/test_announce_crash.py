"""A run's completion that its coordinator had not announced when it was killed reaches
the state-changes exchange from the next coordinator, once, on RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from contracts.topology import STATE_CHANGES_EXCHANGE
from tests.amqp import amqp_channel
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.timeout(240)

LISTENER = "test.run-changes"
FAN = """
name: fan
tasks:
  - name: each
    items: "range(3000)"
    python: tests.steps.teststeps:add
    args: {a: "{{ item }}", b: 1}
  - name: total
    depends: [each]
    python: tests.steps.teststeps:total
    args: {values: "{{ tasks.each.outputs.result }}"}
"""


async def _changes(url: str) -> list[str]:
    """The ids of the run changes the listener's queue holds (taken off it)."""
    ids: list[str] = []
    async with amqp_channel(url) as channel:
        queue = await channel.declare_queue(LISTENER, durable=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            ids.append(json.loads(message.body)["id"])
    return ids


async def test_a_completion_a_killed_coordinator_had_not_announced_comes_from_the_next(
    cluster: Cluster,
) -> None:
    # Task changes too: the 6,000 of them queue ahead of the run's completion, which is
    # still waiting to be published when the run ends and its coordinator is killed.
    cluster.env["CONVEYOR_ANNOUNCE"] = "tasks"
    active = cluster.coordinator()
    await cluster.wait_for_shard_consumers(1)
    async with amqp_channel(cluster.amqp_url) as channel:
        await channel.queue_delete(LISTENER)
        queue = await channel.declare_queue(LISTENER, durable=True)
        exchange = await channel.get_exchange(STATE_CHANGES_EXCHANGE)
        await queue.bind(exchange, "run.#")
    cluster.worker(concurrency=4)
    cluster.worker(concurrency=4)
    run_id = await cluster.submit(FAN)
    completion = f"{run_id}/run_completed/0"

    deadline = time.monotonic() + 120
    while (summary := await cluster.store.summary(run_id)) is None or summary.state == "running":
        assert time.monotonic() < deadline, "the run did not finish"
        await asyncio.sleep(0.01)
    cluster.kill(active)
    assert summary.state == "succeeded"
    assert completion in [event.id for event in await cluster.store.unannounced()]
    assert await _changes(cluster.amqp_url) == [f"{run_id}/run_submitted"]

    cluster.coordinator()
    heard: list[str] = []
    while completion not in heard:
        assert time.monotonic() < deadline, f"the completion never came: {heard}"
        heard += await _changes(cluster.amqp_url)
        await asyncio.sleep(0.05)
    assert heard == [completion]
    while await cluster.store.unannounced():
        assert time.monotonic() < deadline, "announced, and still held as unannounced"
        await asyncio.sleep(0.05)
