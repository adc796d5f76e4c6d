"""The peer for the benchmarks: Celery on the same RabbitMQ (broker) and Redis (results)."""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "conveyor_bench",
    broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1"),
)
app.conf.update(task_default_queue="bench.celery", worker_prefetch_multiplier=4, result_expires=600)


@app.task
def noop(i: int = 0) -> int:
    return i


@app.task
def total(values: list[int]) -> int:
    return len(values)
