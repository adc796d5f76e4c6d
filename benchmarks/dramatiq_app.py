"""The Dramatiq peer for the benchmarks: the same RabbitMQ (broker) and Redis (results)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RabbitmqBroker(url=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
broker.add_middleware(
    Results(backend=RedisBackend(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1/2")))
)
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, queue_name="bench_dramatiq", max_retries=0)
def noop(i: int = 0) -> int:
    return i
