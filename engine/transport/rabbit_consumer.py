"""What a RabbitMQ consumer hands out: deliveries settled by their taker, never
auto-acked, and taken one by one or as many as have arrived."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

log = structlog.get_logger("conveyor.rabbitmq")

RETRYABLE = (AMQPError, ConnectionError, OSError, asyncio.TimeoutError, RuntimeError)
"""What the broker or the network can raise that trying again may cure."""


class RabbitDelivery:
    __slots__ = ("_message", "body", "headers", "redelivered")

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self.body = message.body
        self.redelivered = bool(message.redelivered)
        self.headers: Mapping[str, Any] = message.headers or {}

    async def ack(self) -> None:
        try:
            await self._message.ack()
        except (ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
            # The channel died after the work was done: the broker will redeliver, and
            # the consequence is idempotent.
            log.warning("ack lost with its channel; message will be redelivered", error=str(exc))

    async def nack(self, *, requeue: bool) -> None:
        try:
            await self._message.nack(requeue=requeue)
        except (ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
            log.warning("nack lost with its channel", error=str(exc))


class RabbitConsumer:
    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._channel = channel
        self._queue = queue
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()

    async def start(self) -> None:
        await self._queue.consume(self._inbox.put, no_ack=False)

    def __aiter__(self) -> AsyncIterator[RabbitDelivery]:
        return self

    async def __anext__(self) -> RabbitDelivery:
        message = await self._inbox.get()
        if message is None:
            raise StopAsyncIteration
        return RabbitDelivery(message)

    def ready(self, limit: int) -> list[RabbitDelivery]:
        out: list[RabbitDelivery] = []
        while len(out) < limit:
            try:
                message = self._inbox.get_nowait()
            except asyncio.QueueEmpty:
                break
            if message is None:  # closing: leave the marker for the iterator
                self._inbox.put_nowait(None)
                break
            out.append(RabbitDelivery(message))
        return out

    async def close(self) -> None:
        self._inbox.put_nowait(None)
        # Closing the channel returns its unacked deliveries to the queue.
        with contextlib.suppress(*RETRYABLE):
            await self._channel.close()
