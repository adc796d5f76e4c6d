"""Arguments of Conveyor's RabbitMQ queues: quorum (replicated, delivery-counting) or
classic, as ``engine.transport.rabbitmq`` declares them."""

from __future__ import annotations

from typing import Any

from contracts.topology import DEAD_LETTER_EXCHANGE, is_shard_queue

QUEUE_TYPES = ("quorum", "classic")
DELIVERY_LIMIT = 20
"""Deliveries of one message (to workers that die, coordinators that fail handling it,
consumers that stop) before a quorum queue dead-letters it."""


def queue_arguments(
    name: str, queue_type: str = "quorum", delivery_limit: int = DELIVERY_LIMIT
) -> dict[str, Any]:
    args: dict[str, Any] = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}
    if queue_type == "quorum":
        args["x-queue-type"] = "quorum"
        args["x-delivery-limit"] = delivery_limit
    if is_shard_queue(name):
        args["x-single-active-consumer"] = True
    return args


def dead_letter_arguments(queue_type: str) -> dict[str, Any] | None:
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else None
