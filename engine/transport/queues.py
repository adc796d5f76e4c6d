"""Arguments of Conveyor's RabbitMQ queues: quorum (replicated, delivery-counting) or
classic, as ``engine.transport.rabbitmq`` declares them."""

from __future__ import annotations

import re
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


_VALUE = r"(none|the value '[^']*' of type '[^']*'|'[^']*')"
_INEQUIVALENT = re.compile(
    rf"inequivalent arg '([^']+)'.*: received {_VALUE} but current is {_VALUE}"
)


def _value(argument: str, said: str) -> str:
    """``'5'``, ``the value 'quorum' of type 'longstr'`` or ``none`` as the value itself."""
    if said == "none":
        return "classic" if argument == "x-queue-type" else "none"
    return said.split("'")[1]


def mismatch_advice(name: str, queue_type: str, broker_says: str) -> str:
    """What to do about queue ``name`` existing with other arguments than this process
    declares it with; ``broker_says`` is RabbitMQ's PRECONDITION_FAILED text."""
    found = _INEQUIVALENT.search(broker_says)
    if found is None:
        return (
            f"queue {name!r} exists on the broker with other settings than a {queue_type}"
            f" queue of Conveyor's ({broker_says}): drain and delete it"
            " (rabbitmqctl delete_queue)"
        )
    argument = found.group(1)
    wanted, current = _value(argument, found.group(2)), _value(argument, found.group(3))
    said = (
        f"queue {name!r} exists on the broker with {argument} {current}, and this process"
        f" declares it with {wanted}"
    )
    if argument == "x-delivery-limit":
        return (
            f"{said}: set CONVEYOR_DELIVERY_LIMIT={current} for every Conveyor process on"
            " this broker, or drain and delete the queue (rabbitmqctl delete_queue)"
        )
    # A queue's type, and the arguments Conveyor has no setting for, cannot change.
    advice = f"{said}: drain and delete it (rabbitmqctl delete_queue)"
    if argument == "x-queue-type":
        return f"{advice}, or set CONVEYOR_QUEUE_TYPE={current}"
    return advice
