"""Prometheus metrics of a server, coordinator or worker process (``prometheus-client``).

Run and task figures come from the coordinator's stream of durable events (an
observer), trigger figures from the trigger runtime's decisions, slot figures from the
worker. The server shows them on ``/metrics``; a coordinator or worker started with
``--metrics-port`` serves them on that port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from contracts.events import (
    Event,
    RunCompleted,
    RunSubmitted,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from contracts.ports import TriggerRecord
from contracts.topology import task_queue
from engine.state.model import RunState

RUNS_STARTED = Counter("conveyor_runs_started", "Runs started.", ["workflow"])
RUNS_FINISHED = Counter("conveyor_runs_finished", "Runs finished, by state.", ["workflow", "state"])
TASKS_FINISHED = Counter(
    "conveyor_task_attempts_finished", "Task attempts finished, by state.", ["workflow", "state"]
)
QUEUE_WAIT = Histogram(
    "conveyor_task_queue_wait_seconds",
    "From a task's dispatch to its start on a worker.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TASK_DURATION = Histogram(
    "conveyor_task_duration_seconds",
    "How long a task attempt ran.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
TRIGGER_DECISIONS = Counter(
    "conveyor_trigger_decisions",
    "What was decided about deliveries, ticks, messages and objects.",
    ["workflow", "kind", "decision"],
)
QUEUE_DEPTH = Gauge("conveyor_queue_depth", "Task messages waiting, by pool.", ["pool"])
WORKER_SLOTS = Gauge("conveyor_worker_slots", "Worker slots, busy or free.", ["pool", "use"])


APPEND_LATENCY = Histogram(
    "conveyor_event_log_append_seconds",
    "How long one append to the run log took (events and the decisions made on them).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class TimedRunLog:
    """A run log whose appends are timed; everything else passes through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def append(self, run_id: str, events: Any, *, then: Any = ()) -> list[bool]:
        started = time.perf_counter()
        try:
            added: list[bool] = await self._inner.append(run_id, events, then=then)
            return added
        finally:
            APPEND_LATENCY.observe(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RunMetrics:
    """A coordinator observer counting runs and tasks; it keeps dispatch times only of
    attempts in flight (bounded by what is running)."""

    def __init__(self) -> None:
        self.pools: set[str] = set()
        """Pools tasks were dispatched to (their queues are watched)."""
        self._dispatched: dict[tuple[str, str, int, int], float] = {}
        self._started: dict[tuple[str, str, int, int], float] = {}

    def __call__(self, event: Event, state: RunState) -> None:
        workflow = state.workflow.name
        if isinstance(event, RunSubmitted):
            RUNS_STARTED.labels(workflow).inc()
        elif isinstance(event, RunCompleted):
            RUNS_FINISHED.labels(workflow, str(event.state)).inc()
        elif isinstance(event, TaskDispatched):
            self._dispatched[_key(event)] = event.at
            self.pools.add(state.nodes[event.task].spec.pool)
        elif isinstance(event, TaskStarted):
            dispatched = self._dispatched.pop(_key(event), None)
            if dispatched is not None:
                QUEUE_WAIT.observe(max(0.0, event.at - dispatched))
            self._started[_key(event)] = event.at
        elif isinstance(event, TaskSucceeded | TaskFailed):
            TASKS_FINISHED.labels(
                workflow, "succeeded" if isinstance(event, TaskSucceeded) else "failed"
            ).inc()
            self._dispatched.pop(_key(event), None)
            started = self._started.pop(_key(event), None)
            if started is not None:
                TASK_DURATION.observe(max(0.0, event.at - started))


def _key(event: Any) -> tuple[str, str, int, int]:
    return (event.run_id, event.task, event.index, event.attempt)


def count_decision(record: TriggerRecord) -> None:
    TRIGGER_DECISIONS.labels(record.workflow, record.kind, record.decision).inc()


def worker_slots(pool: str, busy: int, total: int) -> None:
    WORKER_SLOTS.labels(pool, "busy").set(busy)
    WORKER_SLOTS.labels(pool, "free").set(max(0, total - busy))


async def watch_queues(transport: Any, metrics: RunMetrics, every: float = 5.0) -> None:
    """Keep the queue depth of every pool seen up to date (until cancelled)."""
    depth = getattr(transport, "queue_depth", None)
    if depth is None:
        return
    while True:
        for pool in sorted(metrics.pools):
            with contextlib.suppress(Exception):  # a broker hiccup: the next look will do
                found = await depth(task_queue(pool))
                if found is not None:
                    QUEUE_DEPTH.labels(pool).set(found)
        await asyncio.sleep(every)
