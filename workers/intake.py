"""How a worker takes task messages from its pool's queue: only when a slot is free,
and giving back what it holds when its slots stay taken.

A worker whose every slot stays taken for ``give_back_after`` with a message in hand
gives back what it holds and has not started: its consumer closes, which returns the
message and the rest of its prefetch to the queue for a worker with room. It consumes
again once a slot frees, prefetching no more messages than it has free slots. So long
steps do not hoard the messages queued behind them, and a worker that freezes after
being full that long holds nothing it has not started (its started attempts run
elsewhere when their leases end; what a worker holds when it freezes sooner comes back
when the broker misses its AMQP heartbeats).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from contracts.codec import DecodeError, decode_tasks
from contracts.messages import TaskReady
from contracts.ports import Consumer, Delivery, Transport
from contracts.topology import task_queue

log = structlog.get_logger("conveyor.worker")

GIVE_BACK_AFTER = 1.0
"""Seconds a worker with every slot taken keeps a message it cannot start."""

GIVE_BACK_BELOW = 5
"""Messages delivered this often already are kept, not given back: a quorum queue counts
a return as a failed delivery and dead-letters a message at its delivery limit."""


class Slots(Protocol):
    """The worker's side: its slots, and what it does with a message it takes."""

    room: asyncio.Event
    """Set while a slot is free."""

    def free_slots(self) -> int: ...

    async def accepted(self, timeout: float | None = None) -> None:
        """Returns once the acks of the messages taken so far have gone out."""

    def take(self, delivery: Delivery, tasks: list[TaskReady]) -> None: ...


class TaskIntake:
    def __init__(
        self,
        transport: Transport,
        pool: str,
        slots: Slots,
        *,
        give_back_after: float | None,
        log: structlog.typing.FilteringBoundLogger = log,
    ) -> None:
        """``give_back_after``: None keeps what it took however long it waits (a sole
        worker, as embedded, has no one to give it to)."""
        self._transport = transport
        self._queue = task_queue(pool)
        self._slots = slots
        self._give_back_after = give_back_after
        self._log = log
        self._consumer: Consumer | None = None
        self._stopping = False

    async def open(self) -> None:
        self._consumer = await self._consume()

    async def run(self) -> None:
        consumer = self._consumer
        while consumer is not None and await self._take_from(consumer):
            await self._slots.room.wait()
            if self._stopping:
                return
            consumer = self._consumer = await self._consume()
            if self._stopping:
                await consumer.close()
                return

    def stop_taking(self) -> None:
        self._stopping = True

    async def close(self) -> None:
        """Take no more; the messages not taken go back to the queue."""
        self._stopping = True
        if self._consumer is not None:
            await self._consumer.close()

    async def _consume(self) -> Consumer:
        return await self._transport.consume(self._queue, prefetch=max(1, self._slots.free_slots()))

    async def _take_from(self, consumer: Consumer) -> bool:
        """Take messages until the consumer closes; True if it closed to give back."""
        async for delivery in consumer:
            if not self._slots.room.is_set() and not await self._room_soon(delivery):
                await self._give_back(consumer)
                return True
            await self._slots.room.wait()
            if self._stopping:
                await delivery.nack(requeue=True)
                return False
            try:
                tasks = decode_tasks(delivery.body)
                if not all(task.reply_to for task in tasks):
                    raise DecodeError("task message has no reply_to queue")
            except DecodeError as exc:
                self._log.error("dead-lettered an undecodable task message", error=str(exc))
                await delivery.nack(requeue=False)
                continue
            self._slots.take(delivery, tasks)
        return False

    async def _room_soon(self, delivery: Delivery) -> bool:
        """Whether a slot frees within ``give_back_after`` (or the message is kept anyway)."""
        if self._give_back_after is None or _deliveries(delivery) >= GIVE_BACK_BELOW:
            return True
        try:
            async with asyncio.timeout(self._give_back_after):
                await self._slots.room.wait()
        except TimeoutError:
            return False
        return True

    async def _give_back(self, consumer: Consumer) -> None:
        # An ack in flight goes over the consumer's channel: it lands first, or closing
        # would send back a message whose steps already run.
        await self._slots.accepted()
        await consumer.close()
        self._log.info("gave back task messages: every slot taken", waited=self._give_back_after)


def _deliveries(delivery: Delivery) -> int:
    """How often a quorum queue has delivered this message before (its own count)."""
    try:
        return int(delivery.headers.get("x-delivery-count", 0))
    except (TypeError, ValueError):
        return 0
