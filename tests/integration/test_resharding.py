"""Resharding live: 2 -> 4 coordinator shards in the middle of 100 runs, on real
RabbitMQ, Redis and processes, with the active coordinator killed after the change."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter

import pytest

from contracts.events import TaskDispatched, TaskSucceeded
from contracts.validation import resolve_params
from tests.engine.test_resharding import GATED
from tests.integration.cluster import SHARDS, Cluster

pytestmark = pytest.mark.timeout(300)

RUNS = 100


def conveyor(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cluster.workdir,
        env={**cluster.env, "CONVEYOR_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout + done.stderr


async def gate_reached(cluster: Cluster, run_ids: list[str]) -> None:
    for run_id in run_ids:
        await cluster.wait_until(
            run_id,
            lambda events: any(isinstance(e, TaskDispatched) and e.task == "gate" for e in events),
            60,
            "the run to reach its gate",
        )


async def both_saw_the_change(cluster: Cluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    logs = sorted(cluster.workdir.glob("coordinator-*.log"))
    assert len(logs) == 2
    while not all("shard map changed" in log.read_text() for log in logs):
        assert time.monotonic() < deadline, "a coordinator never read the new shard map"
        await asyncio.sleep(0.1)


async def test_two_to_four_shards_in_the_middle_of_a_hundred_runs(cluster: Cluster) -> None:
    active = cluster.coordinator()
    await cluster.wait_for_shard_consumers(1)
    cluster.coordinator()  # a standby on every shard
    cluster.worker(concurrency=4)
    cluster.worker(concurrency=4)
    workflow = GATED
    params = resolve_params(workflow, {})

    async with cluster.client() as client:
        first = [await client.submit(workflow, params) for _ in range(RUNS // 2)]
        await gate_reached(cluster, first[:5])
        assert "new runs go to 2 shard(s)" in conveyor(cluster, "shards")
        changed_at = time.monotonic()
        said = conveyor(cluster, "shards", "4")
        assert "new runs go to 4 shard(s); coordinators consume 4 shard queue(s)" in said
        # Both coordinators take up the new queues without a restart.
        await cluster.wait_for_shard_consumers(1, shards=4)
        await both_saw_the_change(cluster)
        took = time.monotonic() - changed_at
        print(f"\n[reshard] both coordinators consume 4 shards {took:.2f}s after the change")
        second = [await client.submit(workflow, params) for _ in range(RUNS - RUNS // 2)]
        await gate_reached(cluster, first + second)

        cluster.kill(active)  # the standby takes over every shard, the new ones too
        for run_id in first + second:
            await client.signal(run_id, "gate", {"ok": True})
        states = {run_id: await cluster.finished(run_id, timeout=120) for run_id in first + second}

    assert {s.status for s in states.values()} == {"succeeded"}
    assert {states[r].shard for r in first} <= set(range(SHARDS))
    later = Counter(states[r].shard for r in second)
    assert set(later) <= {0, 1, 2, 3} and later[2] + later[3] > 0, later
    for run_id in first + second:
        succeeded = Counter(
            e.task for e in await cluster.events(run_id) if isinstance(e, TaskSucceeded)
        )
        assert succeeded == {"before": 1, "gate": 1, "after": 1}, (run_id, succeeded)
    assert "0 dead-lettered" in conveyor(cluster, "dead-letters")
