"""A worker's heartbeats: what keeps the leases of the attempts it runs alive.

Every ``interval`` the worker tells each coordinator shard it reports to which of that
shard's attempts it is still running. A worker that dies or freezes stops beating, and
the coordinator records those attempts ``lost`` once their leases end, to run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from contracts.codec import encode
from contracts.messages import Heartbeat
from contracts.ports import Transport
from contracts.vocabulary import AttemptRef

log = structlog.get_logger("conveyor.worker")


async def beat(
    transport: Transport,
    worker: str,
    interval: float,
    clock: Callable[[], float],
    running: Callable[[], Iterable[tuple[AttemptRef, str]]],
) -> None:
    """Beat every ``interval`` for the attempts ``running()`` names, with the queue each
    reports to; a beat that cannot be sent is logged and the next one tried."""
    while True:
        await asyncio.sleep(interval)
        by_queue: dict[str, list[AttemptRef]] = {}
        for ref, reply_to in running():
            by_queue.setdefault(reply_to, []).append(ref)
        for queue, attempts in by_queue.items():
            heartbeat = Heartbeat(worker=worker, at=clock(), attempts=attempts)
            try:
                await transport.publish(queue, [encode(heartbeat)])
            except Exception as exc:
                log.warning("heartbeat failed", error=str(exc))
