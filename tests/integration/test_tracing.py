"""Traces: a run's spans hang together across the coordinator and worker processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contracts.tracing import run_span_id
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.timeout(120)

FLOW = """
name: traced
tasks:
  - name: first
    script: echo one
  - name: each
    depends: [first]
    items: [1, 2, 3]
    script: echo item
"""


def spans_in(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_trace_crosses_the_coordinator_and_the_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    coordinator_file, worker_file = tmp_path / "coordinator.jsonl", tmp_path / "worker.jsonl"
    cluster.env["CONVEYOR_TRACE_FILE"] = str(coordinator_file)
    cluster.coordinator()
    cluster.env["CONVEYOR_TRACE_FILE"] = str(worker_file)
    cluster.worker()
    run_id = await cluster.submit(FLOW)
    assert (await cluster.finished(run_id)).status == "succeeded"
    for _ in range(100):  # the coordinator writes the run's span as the run completes
        if spans_in(coordinator_file) and len(spans_in(worker_file)) >= 12:
            break
        await asyncio.sleep(0.1)
    [run] = [s for s in spans_in(coordinator_file) if s["name"] == "run traced"]
    assert run["trace_id"] == run_id and run["span_id"] == run_span_id(run_id)
    assert run["service"] == "conveyor-coordinator"
    worker_spans = spans_in(worker_file)
    [first] = [s for s in worker_spans if s["name"] == "first#1"]
    assert first["trace_id"] == run_id and first["parent_id"] == run["span_id"]
    assert first["service"] == "conveyor-worker"
    children = {s["name"] for s in worker_spans if s["parent_id"] == first["span_id"]}
    assert children == {"queue wait", "execute"}
    items = [s for s in worker_spans if str(s["name"]).startswith("each[")]
    assert len(items) == 3
    for item in items:
        assert item["trace_id"] != run_id  # a trace of its own
        assert item["links"] == [{"trace_id": run_id, "span_id": run["span_id"]}]


def test_the_sdk_s_in_memory_exporter_sees_an_embedded_run() -> None:
    script = textwrap.dedent(
        """
        import asyncio, json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from contracts.validation import parse_workflow
        from conveyor.embedded import EmbeddedEngine
        from conveyor.tracesdk import RunIds

        exporter = InMemorySpanExporter()
        provider = TracerProvider(id_generator=RunIds())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        from engine.triggers.firing import Arrival, Firing
        from engine.triggers.stores.memory import MemoryTriggerStore

        async def main():
            workflow = parse_workflow(FLOW)
            async with EmbeddedEngine() as engine:
                state = await engine.run(workflow, {})
                hooked = parse_workflow(FLOW + "triggers: [{name: push, webhook: {preset: none}}]")
                firing = Firing(MemoryTriggerStore(), engine.client)
                await firing.workflows.register(hooked)
                arrival = Arrival(workflow="traced", version=1, trigger="push", kind="webhook",
                                  key="d-1", names={}, at=0.0)
                await firing.admit_and_handle(arrival)
                await engine.client.watch(arrival.run_id, timeout=10)
            return state.run_id, arrival.run_id

        run_id, hooked_run = asyncio.run(main())
        spans = [
            {"name": s.name, "trace": f"{s.context.trace_id:032x}",
             "parent": f"{s.parent.span_id:016x}" if s.parent else None}
            for s in exporter.get_finished_spans()
        ]
        print(json.dumps({"run_id": run_id, "hooked": hooked_run, "spans": spans}))
        """
    ).replace("FLOW", repr(FLOW))
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    names = [s["name"] for s in found["spans"]]
    assert "run traced" in names and "first#1" in names
    assert sum(name.startswith("each[") for name in names) == 6  # three items in each of two runs
    first = next(s for s in found["spans"] if s["name"] == "first#1")
    assert first["trace"] == found["run_id"] and first["parent"] == run_span_id(found["run_id"])
    # The delivery's handling is in the trace of the run it started.
    [delivery] = [s for s in found["spans"] if s["name"] == "webhook push"]
    assert delivery["trace"] == found["hooked"]
    assert delivery["parent"] == run_span_id(found["hooked"])
