"""Names of the queues and topics components talk over; one place, so nobody guesses."""

from __future__ import annotations

import zlib

COORDINATOR_QUEUE = "conveyor.events"
CONTROL_TOPIC = "conveyor.control"
TASK_QUEUE_PREFIX = "conveyor.tasks."


def task_queue(pool: str) -> str:
    return f"{TASK_QUEUE_PREFIX}{pool}"


DEAD_LETTER_EXCHANGE = "conveyor.dlx"
DEAD_LETTER_QUEUE = "conveyor.dead"
DEFAULT_SHARDS = 4


def shard_queue(shard: int) -> str:
    return f"{COORDINATOR_QUEUE}.{shard}"


def shard_of(run_id: str, shards: int) -> int:
    """Which coordinator shard owns a run: stable across processes and restarts."""
    return zlib.crc32(run_id.encode()) % shards


def is_shard_queue(queue: str) -> bool:
    return queue.startswith(COORDINATOR_QUEUE + ".")
