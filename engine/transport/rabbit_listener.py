"""Broadcasts from RabbitMQ (``conveyor.control``: task cancels), one listener each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from engine.transport.rabbit_consumer import RETRYABLE


class RabbitListener:
    """A listener to a fanout exchange's broadcasts, on an exclusive queue of its own."""

    def __init__(self, connection: Callable[[], AbstractConnection], topic: str) -> None:
        self._connection = connection
        self._topic = topic
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._channel: AbstractChannel | None = None
        self._ready = asyncio.get_running_loop().create_task(self._bind())

    async def _bind(self) -> None:
        channel = await self._connection().channel()
        self._channel = channel
        exchange = await channel.declare_exchange(
            self._topic, aio_pika.ExchangeType.FANOUT, durable=False
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)

        async def on_message(message: AbstractIncomingMessage) -> None:
            self._inbox.put_nowait(message.body)

        await queue.consume(on_message, no_ack=True)

    async def ready(self) -> None:
        """Wait until broadcasts reach this listener."""
        await asyncio.shield(self._ready)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        await self._ready
        body = await self._inbox.get()
        if body is None:
            raise StopAsyncIteration
        return body

    async def aclose(self) -> None:
        self._inbox.put_nowait(None)
        self._ready.cancel()
        if self._channel is not None:
            with contextlib.suppress(*RETRYABLE):
                await self._channel.close()
