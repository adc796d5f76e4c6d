"""What a RabbitMQ consumer hands out: deliveries settled by their taker, never
auto-acked, and taken one by one or as many as have arrived."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

log = structlog.get_logger("conveyor.rabbitmq")

RETRYABLE = (AMQPError, ConnectionError, OSError, asyncio.TimeoutError, RuntimeError)
"""What the broker or the network can raise that trying again may cure."""


@contextlib.contextmanager
def closing_fails_the_call() -> Iterator[None]:
    """A closing under the call becomes a ``ConnectionError``, which callers try again.

    aiormq fails the pending futures of a channel or connection it closes with the
    close's reason: ``CancelledError`` by default, so a publish awaiting its confirm
    while the connection goes to another node raises one in a task that was never
    cancelled. Let through, it would end the publisher's task as if it had been stopped,
    silently. A close without a reason fails them, and any future made on the closed
    channel after it, with a bare ``Exception``, which no handler of broker errors
    expects. A cancel of the task itself passes.
    """
    try:
        yield
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise ConnectionError("the broker closed the connection under this call") from exc
    except Exception as exc:
        if type(exc) is not Exception or exc.args:
            raise
        raise ConnectionError("the broker's channel closed under this call") from exc


@contextlib.asynccontextmanager
async def broker_call(seconds: float) -> AsyncIterator[None]:
    """A call to the broker, bounded: past ``seconds`` it raises ``TimeoutError`` (the
    bound's own cancel passes the guard), and a closing under it ``ConnectionError``."""
    async with asyncio.timeout(seconds):
        with closing_fails_the_call():
            yield


@contextlib.contextmanager
def broker_errors_ignored() -> Iterator[None]:
    """For calls whose failure changes nothing (closing a channel, sending back a
    delivery): what the broker or the network raises, a closing's ``CancelledError``
    among it, is let go."""
    with contextlib.suppress(*RETRYABLE), closing_fails_the_call():
        yield


class RabbitDelivery:
    __slots__ = ("_message", "body", "headers", "redelivered")

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self.body = message.body
        self.redelivered = bool(message.redelivered)
        self.headers: Mapping[str, Any] = message.headers or {}

    @property
    def settleable(self) -> bool:
        # A reconnect gives the robust channel a new AMQP channel; this one stays closed
        # (and aio-pika raises on reading a closed one).
        try:
            return not self._message.channel.is_closed
        except ChannelInvalidStateError:
            return False

    async def ack(self) -> None:
        try:
            with closing_fails_the_call():
                await self._message.ack()
        except (ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
            # The channel died after the work was done: the broker will redeliver, and
            # the consequence is idempotent.
            log.warning("ack lost with its channel; message will be redelivered", error=str(exc))

    async def nack(self, *, requeue: bool) -> None:
        try:
            with closing_fails_the_call():
                await self._message.nack(requeue=requeue)
        except (ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
            log.warning("nack lost with its channel", error=str(exc))


class RabbitConsumer:
    """A consumer on a channel of its own (closing the channel returns what it has not
    settled)."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, prefetch: int) -> None:
        self._channel = channel
        self._prefetch = prefetch
        self._queue = queue
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._tag: str | None = None
        self._drained = False
        self._cancelled_again: set[str] = set()

    async def start(self) -> None:
        await self._consume()

    async def _consume(self) -> None:
        # The tag is chosen here, so a delivery for it is known from its first.
        self._tag = f"conveyor.{uuid.uuid4().hex}"
        self._drained = False
        await self._queue.consume(self._received, no_ack=False, consumer_tag=self._tag)

    async def _received(self, message: AbstractIncomingMessage) -> None:
        if self._drained or message.consumer_tag != self._tag:
            # Never taken, so it goes back to the queue. Sent before the cancel yet
            # handed over after it (not seen so far), or for a drained consumer that a
            # reconnect brought back (its cancel lost with the connection): that one is
            # cancelled again first, or the message would come straight back to it, and
            # so on (each return counted towards the quorum queue's delivery limit).
            log.debug("delivery after a drain sent back", queue=self._queue.name)
            tag = message.consumer_tag
            if tag is not None and tag not in self._cancelled_again:
                self._cancelled_again.add(tag)
                with broker_errors_ignored():
                    await self._queue.cancel(tag)
            with broker_errors_ignored():
                await message.nack(requeue=True)
            return
        self._inbox.put_nowait(message)

    async def drain(self) -> None:
        if self._drained or self._tag is None:
            return
        try:
            await self._queue.cancel(self._tag)
            # The broker sends no delivery after its cancel-ok, and the client reads the
            # deliveries before it; each reaches ``_received`` two tasks after being
            # read (aiormq's, then aio-pika's), so two turns of the loop hand over the
            # last.
            for _ in range(2):
                await asyncio.sleep(0)
        finally:
            # Also when the channel died: what it had not settled goes back anyway.
            self._drained = True
            self._inbox.put_nowait(None)

    async def reopen(self, prefetch: int) -> None:
        # The same channel: its unsettled deliveries stay ours to settle, and the new
        # prefetch applies to the consumer started after it.
        if prefetch != self._prefetch:
            await self._channel.set_qos(prefetch_count=prefetch)
            self._prefetch = prefetch
        self._inbox = asyncio.Queue()
        await self._consume()

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
        with broker_errors_ignored():
            await self._channel.close()
