"""A workflow step over 1,000 items, embedded: one child run per item (each a one-step
workflow of its own), against the same 1,000 items as plain tasks, side by side.

What a child run costs beyond its step: its submission, its own log and state, its
start and end told to the parent's shard.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from contracts.validation import workflow_from_data
from conveyor.embedded import EmbeddedEngine

CHILD = {
    "name": "one",
    "params": {"i": {"type": "int"}},
    "tasks": [{"name": "step", "python": "benchsteps:noop", "args": {"i": "{{ params.i }}"}}],
    "outputs": {"value": "{{ tasks.step.outputs.result }}"},
}


def parent(n: int, *, as_runs: bool) -> Any:
    each: dict[str, Any] = {"name": "each", "items": f"range({n})"}
    if as_runs:
        each["workflow"] = {"spec": CHILD, "params": {"i": "{{ item }}"}}
    else:
        each |= {"python": "benchsteps:noop", "args": {"i": "{{ item }}"}}
    return workflow_from_data(
        {
            "name": f"child-runs-{n}" if as_runs else f"tasks-{n}",
            "tasks": [
                each,
                {
                    "name": "count",
                    "depends": ["each"],
                    "python": "benchsteps:count",
                    "args": {"values": "{{ tasks.each.outputs.result }}"},
                },
            ],
        }
    )


async def child_runs(n: int = 1_000, rounds: int = 3) -> dict[str, float]:
    """Items a second, the median of ``rounds`` alternating pairs (child runs, then
    plain tasks), each on a new in-memory engine."""
    as_runs: list[float] = []
    as_tasks: list[float] = []
    for _ in range(rounds):
        for rates, flow in (
            (as_runs, parent(n, as_runs=True)),
            (as_tasks, parent(n, as_runs=False)),
        ):
            async with EmbeddedEngine() as engine:
                started = time.perf_counter()
                state = await engine.run(flow, {})
                rates.append(n / (time.perf_counter() - started))
            assert state.status == "succeeded", state.reason
            assert state.nodes["count"].outputs()["result"] == n
    size = f"{n // 1000}k" if n % 1000 == 0 else str(n)  # as the suite names sizes
    return {
        f"embedded_child_runs_{size}_per_s": statistics.median(as_runs),
        f"embedded_fanout_{size}_beside_child_runs_tasks_per_s": statistics.median(as_tasks),
    }
