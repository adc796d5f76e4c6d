"""The RabbitMQ transport (aio-pika), behind the same Protocol as the in-memory twin.

Topology (declared idempotently at start and again on every reconnect):

- every work and shard queue: durable, ``x-dead-letter-exchange: conveyor.dlx``, and
  by default a quorum queue (replicated over a cluster's nodes, Raft-backed, a
  survivor of its leader node stopping) whose broker counts deliveries: a message
  delivered ``x-delivery-limit`` times without being acked is dead-lettered, so a
  message that crashes whoever takes it cannot loop forever, even across restarts.
  (Dead-lettering is the broker's default, at most once: RabbitMQ 3.10's at-least-once
  strategy, which needs ``x-overflow: reject-publish``, refused every publish to a
  shard queue after one node of three stopped.) ``queue_type="classic"`` serves a
  single node the old way;
- coordinator shard queues (``conveyor.events.N``) also have
  ``x-single-active-consumer: true``, so extra coordinators are hot standbys;
- ``conveyor.dlx`` (fanout, durable) -> ``conveyor.dead`` (durable, quorum too):
  messages rejected without requeue (undecodable, or failing again and again) are
  kept there;
- ``conveyor.control`` (fanout, not durable): broadcasts such as task cancels; each
  listener has an exclusive, auto-deleted queue bound to it.

Messages are persistent and every publish waits for the broker's confirm (the
publishes of one call are pipelined). Deliveries are settled by the caller
(``contracts.ports.processing``), never auto-acked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage
from yarl import URL

from contracts.errors import ConveyorError
from contracts.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    STATE_CHANGES_EXCHANGE,
)
from engine.transport.failover import FailoverConnection, cluster_urls
from engine.transport.queues import (
    DELIVERY_LIMIT,
    QUEUE_TYPES,
    dead_letter_arguments,
    mismatch_advice,
    queue_arguments,
)
from engine.transport.rabbit_consumer import (
    RETRYABLE,
    RabbitConsumer,
    broker_call,
    broker_errors_ignored,
    closing_fails_the_call,
)
from engine.transport.rabbit_listener import RabbitListener

log = structlog.get_logger("conveyor.rabbitmq")
T = TypeVar("T")
CLOSE_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 10.0
CHANNEL_TIMEOUT = 15.0
"""Seconds opening and setting up a channel may take before it is tried again. An open
the broker never answers (on a connection to a node as it stopped, or whose restore
after a reconnect hangs) would otherwise hold every publish waiting for it, with
nothing in the logs."""


class Unroutable(Exception):
    """The broker returned a message: no queue of that name exists."""


class RabbitTransport:
    """Implements ``contracts.ports.Transport`` on RabbitMQ (one node, or a cluster's
    nodes as comma-separated URLs)."""

    def __init__(
        self,
        url: str,
        *,
        heartbeat: float | None = None,
        publish_retry_max: float = 2.0,
        queue_type: str = "quorum",
        delivery_limit: int = DELIVERY_LIMIT,
        connect_within: float | None = None,
    ) -> None:
        """``connect_within``: seconds ``start`` tries to reach the broker before it gives
        up (a command someone waits for); None tries for as long as it takes (a
        service, which its supervisor should not see die of a broker that is late)."""
        if queue_type not in QUEUE_TYPES:
            raise ConveyorError(f"queue type must be one of {', '.join(QUEUE_TYPES)}")
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit if queue_type == "quorum" else None
        """Set when the broker dead-letters a message delivered this many times (so a
        consumer need not count failed handlings itself)."""
        # The AMQP heartbeat is how the broker notices a frozen peer and returns the
        # messages it held to the queue; the URL's own setting wins.
        urls = []
        for one in cluster_urls(url):
            parsed = URL(one)
            if heartbeat is not None and "heartbeat" not in parsed.query:
                parsed = parsed.update_query(heartbeat=max(1, round(heartbeat)))
            urls.append(parsed)
        self._urls = tuple(urls)
        self._url = str(urls[0])
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._exchanges: dict[str, AbstractExchange] = {}
        self._changes: AbstractExchange | None = None
        self._retry_max = publish_retry_max
        self._closing = False
        self._renewing = asyncio.Lock()
        self._reconnect_hooks: list[Callable[[], None]] = []
        self._connect_within = connect_within

    def on_reconnect(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` after the connection was lost and made again."""
        self._reconnect_hooks.append(hook)

    def _connection_or_fail(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise ConveyorError("transport not started")
        return self._connection

    async def start(self) -> None:
        if self._connection is not None:
            return  # started already (by whoever handed it over)
        delay = 0.1
        connection_class = type("ClusterConnection", (FailoverConnection,), {"URLS": self._urls})
        turn = 0
        deadline = None if self._connect_within is None else time.monotonic() + self._connect_within
        while True:
            url = self._urls[turn % len(self._urls)]
            try:
                self._connection = await aio_pika.connect_robust(
                    url, reconnect_interval=1.0, connection_class=connection_class
                )
                break
            except RETRYABLE as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise ConveyorError(
                        f"RabbitMQ not reachable at {_where(self._urls)} within"
                        f" {self._connect_within:g}s: {exc}",
                        retryable=True,
                    ) from exc
                log.warning("RabbitMQ not reachable; retrying", error=str(exc), delay=delay)
                turn += 1
                if turn % len(self._urls) == 0:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        self._publish_channel = await self._on_a_channel(
            "declaring the topology", self._declared_on
        )

    async def _declared_on(self, channel: AbstractChannel) -> AbstractChannel:
        await self._declare_topology(channel)
        return channel

    async def _renew_publish_channel(self, refused: AbstractChannel) -> None:
        """Publish on a new channel from now on, ``refused`` having been refused.

        RabbitMQ 3.10 can refuse every publish to a quorum queue, for good, on a channel
        that was opened again while the queue elected a new leader (its node stopped),
        while a new channel publishes there at once. A refusal for a real cause (no
        majority) costs one channel per retry.
        """
        async with self._renewing:
            if self._publish_channel is not refused or self._closing:
                return  # renewed by another publish meanwhile
            log.info("publishing on a new channel after a refusal")
            self._exchanges.clear()  # declared through the old channel
            self._publish_channel = await self._on_a_channel(
                "opening a publish channel", self._declared_on
            )
        await _close_quietly(refused)

    async def _on_a_channel(self, what: str, setup: Callable[[AbstractChannel], Awaitable[T]]) -> T:
        """``setup`` on a new channel. A broker that drops the connection meanwhile (a
        node restarting; RabbitMQ closing it with INTERNAL_ERROR) is waited out, as a
        publish waits: a worker starting in that moment begins late rather than exits."""
        delay = 0.05
        while True:
            channel = None
            try:
                async with broker_call(CHANNEL_TIMEOUT):
                    channel = await self._connection_or_fail().channel(publisher_confirms=True)
                    return await setup(channel)
            except RETRYABLE as exc:
                if self._closing:
                    raise
                if channel is not None:
                    await _close_quietly(channel)
                error = str(exc) or type(exc).__name__
                log.warning(f"{what} failed; retrying", error=error, delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    async def _declare_topology(self, channel: AbstractChannel) -> None:
        dlx = await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead = await self._declare(channel, DEAD_LETTER_QUEUE, self._dead_arguments)
        await dead.bind(dlx)
        self._changes = await channel.declare_exchange(
            STATE_CHANGES_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for name in list(self._declared):
            await self._declare(channel, name, self._arguments(name))

    async def _on_reconnect(self, *_args: Any) -> None:
        log.info("reconnected to RabbitMQ; re-declaring topology")
        for hook in self._reconnect_hooks:
            hook()
        if self._publish_channel is not None:
            try:
                async with broker_call(CHANNEL_TIMEOUT):
                    await self._declare_topology(self._publish_channel)
            except RETRYABLE as exc:
                log.warning("re-declaring topology failed; will retry on use", error=str(exc))

    async def close(self) -> None:
        self._closing = True
        if self._connection is not None:
            # A close the broker never answers must not keep a process from stopping.
            try:
                await asyncio.wait_for(self._connection.close(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("RabbitMQ did not answer the close; leaving the connection")
            self._connection = None
            self._publish_channel = None  # a closed transport refuses, never hangs

    def _arguments(self, name: str) -> dict[str, Any]:
        return queue_arguments(name, self.queue_type, self.delivery_limit or DELIVERY_LIMIT)

    @property
    def _dead_arguments(self) -> dict[str, Any] | None:
        return dead_letter_arguments(self.queue_type)

    async def _declare(
        self, channel: AbstractChannel, name: str, arguments: dict[str, Any] | None
    ) -> AbstractQueue:
        try:
            return await channel.declare_queue(name, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise ConveyorError(
                mismatch_advice(name, self.queue_type, str(exc)), retryable=False
            ) from exc

    async def _ensure_queue(self, channel: AbstractChannel, name: str) -> AbstractQueue:
        queue = await self._declare(channel, name, self._arguments(name))
        self._declared.add(name)
        return queue

    async def publish(
        self, queue: str, bodies: Sequence[bytes], headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish persistent messages; returns when the broker has confirmed all of them.

        While the broker is unreachable this keeps retrying (the caller holds its own
        input unacked meanwhile); a message may then be published twice, which every
        consumer tolerates by event id.
        """
        delay = 0.05
        while True:
            channel = self._publish_channel
            try:
                if channel is None:
                    raise ConveyorError("transport not started")
                # A confirm that never comes (its connection went down mid-publish) must
                # not hold the sender forever: past the bound, the publish is tried again.
                async with broker_call(PUBLISH_TIMEOUT):
                    if queue not in self._declared:
                        await self._ensure_queue(channel, queue)
                    exchange = channel.default_exchange
                    await self._publish_all(exchange, queue, bodies, headers)
                return
            except Unroutable:
                # The queue was deleted since this process declared it: the broker
                # returned the messages instead of dropping them (``mandatory``).
                # Declared again, they are published again (the ones it did route twice,
                # which consumers tolerate).
                log.warning("queue missing on the broker; declaring it again", queue=queue)
                self._declared.discard(queue)
                if self._closing:
                    raise
            except RETRYABLE as exc:
                if self._closing:
                    raise
                log.warning("publish failed; retrying", queue=queue, error=str(exc), delay=delay)
                if isinstance(exc, aio_pika.exceptions.DeliveryError) and channel is not None:
                    await self._renew_publish_channel(channel)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    @staticmethod
    async def _publish_all(
        exchange: AbstractExchange,
        queue: str,
        bodies: Sequence[bytes],
        headers: Mapping[str, str] | None,
    ) -> None:
        confirms = await asyncio.gather(
            *[
                exchange.publish(
                    aio_pika.Message(
                        body,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=uuid.uuid4().hex,
                        headers=dict(headers) if headers else None,
                    ),
                    routing_key=queue,
                    mandatory=True,
                )
                for body in bodies
            ]
        )
        # A message the broker could not route comes back instead of its ack.
        if any(isinstance(confirm, DeliveredMessage) for confirm in confirms):
            raise Unroutable(queue)

    async def consume(self, queue: str, *, prefetch: int) -> RabbitConsumer:
        async def consuming(channel: AbstractChannel) -> RabbitConsumer:
            await channel.set_qos(prefetch_count=prefetch)
            consumer = RabbitConsumer(channel, await self._ensure_queue(channel, queue), prefetch)
            await consumer.start()
            return consumer

        return await self._on_a_channel(f"consuming {queue}", consuming)

    async def broadcast(self, topic: str, body: bytes) -> None:
        channel = self._publish_channel
        if channel is None:
            raise ConveyorError("transport not started")
        exchange = self._exchanges.get(topic)
        if exchange is None:
            exchange = await channel.declare_exchange(
                topic, aio_pika.ExchangeType.FANOUT, durable=False
            )
            self._exchanges[topic] = exchange
        await exchange.publish(aio_pika.Message(body), routing_key="")

    def listen(self, topic: str) -> RabbitListener:
        return RabbitListener(
            self._connection_or_fail,
            topic,
            bind_timeout=CHANNEL_TIMEOUT,
            retry_max=self._retry_max,
        )

    async def announce(
        self, routing_key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish a state change, persistent and confirmed (a notification is not lost
        by the broker once this returns)."""
        if self._changes is None:
            raise ConveyorError("transport not started")
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/cloudevents+json",
            message_id=uuid.uuid4().hex,
            headers=dict(headers) if headers else None,
        )
        with closing_fails_the_call():
            await self._changes.publish(message, routing_key=routing_key)

    async def bind_announcements(self, queue: str, pattern: str) -> None:
        channel = self._publish_channel
        if channel is None or self._changes is None:
            raise ConveyorError("transport not started")
        declared = await self._ensure_queue(channel, queue)
        await declared.bind(self._changes, routing_key=pattern)

    async def queue_depth(self, queue: str) -> int | None:
        """Messages waiting in ``queue`` (None if it does not exist). Raises TimeoutError
        past ``CHANNEL_TIMEOUT``: the queue-depth gauge (what autoscaling reads) looks
        again, rather than freezing on a broker that does not answer."""
        channel = await self._look_channel()
        try:
            async with broker_call(CHANNEL_TIMEOUT):
                declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)
        except aio_pika.exceptions.ChannelClosed:
            return None
        finally:
            if not channel.is_closed:
                await _close_quietly(channel)

    async def _look_channel(self) -> AbstractChannel:
        """A channel of its own for a look at a queue, opened within ``CHANNEL_TIMEOUT``."""
        async with broker_call(CHANNEL_TIMEOUT):
            return await self._connection_or_fail().channel()

    async def dead_letter_count(self) -> int:
        channel = self._publish_channel
        if channel is None:
            raise ConveyorError("transport not started")
        async with broker_call(CHANNEL_TIMEOUT):
            queue = await self._declare(channel, DEAD_LETTER_QUEUE, self._dead_arguments)
        return int(queue.declaration_result.message_count or 0)

    async def dead_letters(self, limit: int = 20) -> list[tuple[bytes, Mapping[str, Any]]]:
        """Peek at dead-lettered messages (they stay in the queue). Raises TimeoutError
        if the broker does not answer the look within ``CHANNEL_TIMEOUT``."""
        channel = await self._look_channel()
        try:
            async with broker_call(CHANNEL_TIMEOUT):
                queue = await self._declare(channel, DEAD_LETTER_QUEUE, self._dead_arguments)
                seen: list[AbstractIncomingMessage] = []
                for _ in range(limit):
                    message = await queue.get(no_ack=False, fail=False)
                    if message is None:
                        break
                    seen.append(message)
            return [(m.body, m.headers or {}) for m in seen]
        finally:
            await _close_quietly(channel)  # unacked peeks go back to the queue


async def _close_quietly(channel: AbstractChannel) -> None:
    """Close ``channel`` if the broker answers within ``CLOSE_TIMEOUT``, else leave it."""
    with broker_errors_ignored():
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await channel.close()


def _where(urls: tuple[URL, ...]) -> str:
    """The nodes, without credentials."""
    return ", ".join(f"{url.host}:{url.port}" for url in urls)
