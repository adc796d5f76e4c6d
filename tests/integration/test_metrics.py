"""A coordinator and a worker serve Prometheus metrics on the port they are given."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.integration.cluster import Cluster
from tests.services import free_port

pytestmark = pytest.mark.timeout(120)


async def scrape(port: int, name: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                if name in text:
                    return text
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{name} never appeared on port {port}"
            await asyncio.sleep(0.2)


async def test_coordinator_and_worker_serve_their_metrics(cluster: Cluster) -> None:
    coordinator_port, worker_port = free_port(), free_port()
    cluster._spawn("coordinator", "--metrics-port", str(coordinator_port), name="coordinator")
    cluster._spawn(
        "worker", "--concurrency", "3", "--metrics-port", str(worker_port), name="worker"
    )
    run_id = await cluster.submit(
        """
        name: measured
        tasks:
          - name: each
            items: [1, 2, 3, 4]
            script: "true"
        """
    )
    state = await cluster.finished(run_id)
    assert state.status == "succeeded"
    text = await scrape(coordinator_port, 'conveyor_runs_finished_total{state="succeeded"')
    assert (
        'conveyor_task_attempts_finished_total{state="succeeded",workflow="measured"} 4.0' in text
    )
    depth = await scrape(coordinator_port, 'conveyor_queue_depth{pool="default"}')
    assert 'conveyor_queue_depth{pool="default"} 0.0' in depth
    slots = await scrape(worker_port, "conveyor_worker_slots")
    assert 'conveyor_worker_slots{pool="default",use="free"}' in slots
