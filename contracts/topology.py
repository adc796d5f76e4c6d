"""Names of the queues and topics components talk over; one place, so nobody guesses."""

from __future__ import annotations

COORDINATOR_QUEUE = "conveyor.events"
CONTROL_TOPIC = "conveyor.control"
TASK_QUEUE_PREFIX = "conveyor.tasks."


def task_queue(pool: str) -> str:
    return f"{TASK_QUEUE_PREFIX}{pool}"
