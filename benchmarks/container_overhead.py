"""Overhead of a no-op container step against a bare ``podman run`` of the same image.

    python -m benchmarks.container_overhead [--image IMAGE] [--rounds N]

Prints the median and p90 of: a bare ``run --rm IMAGE true``; the container executor
running the same step (naming, labels, mount, inspect, remove); and a whole
one-task workflow in embedded mode (submit to completion). The runs are interleaved
so machine noise hits all three alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from contracts.messages import ContainerSpec, StepSpec, TaskReady
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from workers.executors import ContainerExecutor, ContainerRuntime


def _stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
    return f"median {statistics.median(samples) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


async def main(image: str, rounds: int) -> None:
    runtime = ContainerRuntime.from_env()
    base = runtime.base()
    executor = ContainerExecutor(runtime, worker="bench:0")
    workflow = parse_workflow(
        "name: noop\ntasks:\n  - name: n\n"
        f"    container: {{image: '{image}', command: ['true'], pull: never}}\n"
    )
    bare: list[float] = []
    step: list[float] = []
    run: list[float] = []
    async with EmbeddedEngine(workers=1) as engine:
        for i in range(rounds + 1):
            started = time.perf_counter()
            subprocess.run([*base, "run", "--rm", *runtime.run_args, image, "true"], check=True)
            b = time.perf_counter() - started

            message = TaskReady(
                run_id=f"{i:032d}",
                task="n",
                step=StepSpec(
                    kind="container",
                    container=ContainerSpec(image=image, command=["true"], pull="never"),
                ),
            )
            with tempfile.TemporaryDirectory() as scratch:
                started = time.perf_counter()
                outcome = await executor.run(message, lambda _s, _t: None, Path(scratch))
                s = time.perf_counter() - started
            assert outcome.ok, outcome.error

            started = time.perf_counter()
            state = await engine.run(workflow, {})
            r = time.perf_counter() - started
            assert state.status == "succeeded", state.reason
            if i:  # the first round warms caches
                bare.append(b)
                step.append(s)
                run.append(r)
    print(f"bare `{Path(base[0]).name} run --rm`    {_stats(bare)}")
    b, s, r = statistics.median(bare), statistics.median(step), statistics.median(run)
    print(f"container executor       {_stats(step)}   ratio {s / b:.2f}x")
    print(f"one-task workflow run    {_stats(run)}   ratio {r / b:.2f}x")
    print(f"overhead per step (executor - bare): {(s - b) * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default="localhost/conveyor-busybox:test")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.image, args.rounds))
