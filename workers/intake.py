"""How a worker takes task messages from its pool's queue: never more than it has free
slots for.

A worker's consumer is opened with a prefetch of its free slots, and the broker counts
each message it sends against that prefetch until the message is acked. So a message is
acked at once only when everything the broker could send after the ack finds a free
slot (as for a quick step: its slot is free again by the time its start is reported).
Otherwise (a long step holds the slot, or a batch took several) the worker first drains
the consumer, an AMQP ``basic.cancel`` (the messages already on their way still arrive,
none after them), then acks; once a slot frees, the same consumer consumes again on its
channel with the prefetch of the free slots then. From its opening to its drain, a
consumer's deliveries are a round.

So a worker holds no message it has no slot for: one that freezes holds only attempts
it started, which run elsewhere when their leases end, and long steps do not hoard the
messages queued behind them, which wait in the queue (and in its depth) for a worker
with room.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from contracts.codec import DecodeError, decode_tasks
from contracts.messages import TaskReady
from contracts.ports import Consumer, Delivery, Transport
from contracts.topology import task_queue
from workers.starts import START_HOLD

log = structlog.get_logger("conveyor.worker")


class Slots(Protocol):
    """The worker's side: its slots, and what it does with a message it takes."""

    room: asyncio.Event
    """Set while a slot is free."""

    def free_slots(self) -> int: ...

    def take(self, delivery: Delivery, tasks: list[TaskReady]) -> None:
        """Start the message's attempts; it is acked once they are reported started."""
        ...


class Round:
    """One consumer, opened with a prefetch of the free slots, and what it delivered."""

    def __init__(self, consumer: Consumer, prefetch: int, slots: Slots) -> None:
        self.consumer = consumer
        self._prefetch = prefetch
        self._slots = slots
        self._unsettled: set[Delivery] = set()
        """Taken and not yet settled."""
        self._draining: asyncio.Future[None] | None = None

    def received(self, delivery: Delivery) -> Delivery:
        """The delivery, settled through this round."""
        self._unsettled.add(delivery)
        return GatedDelivery(delivery, self)

    def _credit(self) -> int:
        """How many more messages the broker may send this consumer. What it took back
        with a lost channel (a reconnect consumes again with the same prefetch) counts
        no more: the broker may send that much again."""
        return self._prefetch - sum(1 for held in self._unsettled if held.settleable)

    def taken(self, tasks: int) -> None:
        """After a message of ``tasks`` is taken: a drain its ack will need starts when
        its start is reported (at once for a batch; after ``START_HOLD`` for one task,
        the time a quick step has to end and free its slot), so that the cancel-ok comes
        with the report's confirm and the ack goes out as soon as it would have."""
        if tasks > 1:
            self._drain_if_needed()
        else:
            asyncio.get_running_loop().call_later(START_HOLD, self._drain_if_needed)

    def _drain_if_needed(self) -> None:
        if self._draining is None and self._credit() + 1 > self._slots.free_slots():
            self.drain()

    async def may_settle(self, delivery: Delivery) -> None:
        """Returns when one message may be settled: at once if whatever the broker may
        send after it finds a free slot, or else once the consumer is drained. (Waiting
        for steps to end instead would leave their message unacked meanwhile, to be run
        again by another worker should this one die.)"""
        self._drain_if_needed()
        if self._draining is not None:
            await self.drained()
        self._unsettled.discard(delivery)

    @property
    def asked_to_drain(self) -> bool:
        return self._draining is not None

    def drain(self) -> None:
        """Ask for no more messages (at once, and once)."""
        if self._draining is None:
            self._draining = asyncio.ensure_future(self.consumer.drain())
            self._draining.add_done_callback(_failed_drain)

    async def drained(self) -> None:
        """Returns once the consumer sends no more: drained, or its channel gone (then
        the broker has taken back what it had not settled, and the acks that follow are
        lost, as any ack on a closed channel: the attempts go on, leased)."""
        self.drain()
        assert self._draining is not None
        with contextlib.suppress(Exception):
            await asyncio.shield(self._draining)


def _failed_drain(draining: asyncio.Future[None]) -> None:
    if not draining.cancelled() and draining.exception() is not None:
        log.warning("consumer drain failed: its channel is gone", error=str(draining.exception()))


class GatedDelivery:
    """A delivery whose ack or nack waits until its round may settle it."""

    __slots__ = ("_delivery", "_round", "body", "headers", "redelivered")

    def __init__(self, delivery: Delivery, round_: Round) -> None:
        self._delivery = delivery
        self._round = round_
        self.body: bytes = delivery.body
        self.headers: Mapping[str, Any] = delivery.headers
        self.redelivered: bool = delivery.redelivered

    @property
    def settleable(self) -> bool:
        return self._delivery.settleable

    async def ack(self) -> None:
        await self._round.may_settle(self._delivery)
        await self._delivery.ack()

    async def nack(self, *, requeue: bool) -> None:
        await self._round.may_settle(self._delivery)
        await self._delivery.nack(requeue=requeue)


class TaskIntake:
    def __init__(
        self,
        transport: Transport,
        pool: str,
        slots: Slots,
        *,
        log: structlog.typing.FilteringBoundLogger = log,
    ) -> None:
        self._transport = transport
        self._queue = task_queue(pool)
        self._slots = slots
        self._log = log
        self._consumer: Consumer | None = None
        self._round: Round | None = None
        self._stopping = False

    async def open(self) -> None:
        prefetch = max(1, self._slots.free_slots())
        self._consumer = await self._transport.consume(self._queue, prefetch=prefetch)
        self._round = Round(self._consumer, prefetch, self._slots)

    async def run(self) -> None:
        consumer, current = self._consumer, self._round
        if consumer is None or current is None:
            return
        while True:
            await self._take_from(current)
            if not current.asked_to_drain:
                return  # it ended on its own (the broker dropped it): the loop fails
            await self._slots.room.wait()
            if self._stopping:
                return
            prefetch = max(1, self._slots.free_slots())
            consumer = await self._reopen(consumer, prefetch)
            current = self._round = Round(consumer, prefetch, self._slots)
            if self._stopping:
                current.drain()

    def stop_taking(self) -> None:
        """Take no more: the current round drains, so what it took can be acked."""
        self._stopping = True
        if self._round is not None:
            self._round.drain()

    async def close(self) -> None:
        """Take no more; the messages not settled go back to the queue (the worker has
        waited for the acks of the ones it started)."""
        self.stop_taking()
        if self._consumer is not None:
            await self._consumer.close()

    async def _reopen(self, consumer: Consumer, prefetch: int) -> Consumer:
        """The same consumer consuming again, or a new one if its channel is gone (the
        broker returned what that one had not settled)."""
        try:
            await consumer.reopen(prefetch)
            return consumer
        except Exception as exc:
            self._log.warning("consuming again on a new channel", error=str(exc))
        with contextlib.suppress(Exception):
            await consumer.close()
        self._consumer = await self._transport.consume(self._queue, prefetch=prefetch)
        return self._consumer

    async def _take_from(self, current: Round) -> None:
        """Take what the round delivers until it is drained (or closed)."""
        async for received in current.consumer:
            delivery = current.received(received)
            if self._stopping:
                await delivery.nack(requeue=True)
                continue
            try:
                tasks = decode_tasks(delivery.body)
                if not all(task.reply_to for task in tasks):
                    raise DecodeError("task message has no reply_to queue")
            except DecodeError as exc:
                self._log.error("dead-lettered an undecodable task message", error=str(exc))
                await delivery.nack(requeue=False)
                continue
            self._slots.take(delivery, tasks)
            current.taken(len(tasks))
