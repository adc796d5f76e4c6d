"""Broadcasts from RabbitMQ (``conveyor.control``: task cancels), one listener each.

Binding (a channel, the exchange, an exclusive queue, a consumer) is bounded and tried
again: a worker waits for its listener before it takes work, and an open the broker
never answers would otherwise keep it from starting, with nothing in its log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from engine.transport.rabbit_consumer import RETRYABLE, broker_errors_ignored

log = structlog.get_logger("conveyor.rabbitmq")


class RabbitListener:
    """A listener to a fanout exchange's broadcasts, on an exclusive queue of its own."""

    def __init__(
        self,
        connection: Callable[[], AbstractConnection],
        topic: str,
        *,
        bind_timeout: float,
        retry_max: float = 2.0,
    ) -> None:
        self._connection = connection
        self._topic = topic
        self._bind_timeout = bind_timeout
        self._retry_max = retry_max
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._channel: AbstractChannel | None = None
        self._ready = asyncio.get_running_loop().create_task(self._bind())

    async def _bind(self) -> None:
        """Bind within ``bind_timeout``; past it, or on an error, close and try again."""
        delay = 0.05
        while True:
            try:
                async with asyncio.timeout(self._bind_timeout):
                    await self._bind_once()
                return
            except RETRYABLE as exc:
                log.warning(
                    "could not listen to broadcasts; retrying",
                    topic=self._topic,
                    error=str(exc) or type(exc).__name__,
                    delay=delay,
                )
            await self._close_channel()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def _bind_once(self) -> None:
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
        await self._close_channel()

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with broker_errors_ignored():
                async with asyncio.timeout(self._bind_timeout):
                    await channel.close()
