"""A RabbitMQ publish whose channel closes under it is tried again; a publisher that is
itself cancelled still stops. (aiormq fails the futures of what it closes with
``CancelledError``, so the two look alike to the code awaiting them.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiormq.base import FutureStore

from conveyor.metrics import QUEUE_DEPTH, RunMetrics, watch_queues
from engine.transport.rabbit_consumer import RabbitDelivery, broker_call
from engine.transport.rabbitmq import RabbitTransport


async def closed_under_it() -> None:
    """What awaiting a confirm or an ack does when aiormq closes its channel: its future
    fails with ``CancelledError``, aiormq's default reason for a close."""
    closed = asyncio.get_running_loop().create_future()
    closed.set_exception(asyncio.CancelledError())
    await closed


async def closed_without_a_reason() -> None:
    """The same when aiormq closes a channel with no reason (``close(None)``): its
    futures, and any made on it afterwards, fail with a bare ``Exception``."""
    store = FutureStore(asyncio.get_running_loop())
    await store.reject_all(None)
    await store.create_future()


class ClosingExchange:
    """Closed under its first ``closes`` publishes (``how``); confirms the rest."""

    def __init__(self, closes: int, how: Callable[[], Awaitable[None]] = closed_under_it) -> None:
        self.closes = closes
        self.how = how
        self.published: list[bytes] = []

    async def publish(self, message: Any, routing_key: str, *, mandatory: bool) -> object:
        if self.closes:
            self.closes -= 1
            await self.how()
        self.published.append(message.body)
        return "ack"


class UnansweredExchange:
    """Never confirms."""

    def __init__(self) -> None:
        self.confirm_sent = asyncio.Event()

    async def publish(self, message: Any, routing_key: str, *, mandatory: bool) -> object:
        self.confirm_sent.set()
        return await asyncio.get_running_loop().create_future()


class Channel:
    def __init__(self, exchange: object) -> None:
        self.default_exchange = exchange


def transport_on(exchange: object) -> RabbitTransport:
    transport = RabbitTransport("amqp://guest:guest@127.0.0.1:1/", publish_retry_max=0.01)
    transport._publish_channel = Channel(exchange)  # type: ignore[assignment]
    transport._declared.add("q")
    return transport


@pytest.mark.parametrize("how", [closed_under_it, closed_without_a_reason])
async def test_a_publish_whose_channel_closes_under_it_is_tried_again(
    how: Callable[[], Awaitable[None]],
) -> None:
    exchange = ClosingExchange(closes=2, how=how)

    async with asyncio.timeout(10):
        await transport_on(exchange).publish("q", [b"one"])

    assert exchange.published == [b"one"]
    assert exchange.closes == 0


async def test_an_error_of_the_code_itself_is_not_taken_for_a_closing() -> None:
    with pytest.raises(Exception, match="a bug"):
        async with broker_call(5):
            raise Exception("a bug")


async def test_a_cancelled_publisher_still_stops() -> None:
    exchange = UnansweredExchange()
    publishing = asyncio.create_task(transport_on(exchange).publish("q", [b"one"]))
    await exchange.confirm_sent.wait()

    publishing.cancel()

    with pytest.raises(asyncio.CancelledError):
        await publishing


class ClosingMessage:
    """An incoming message whose channel closes as it is acked (aiormq's way)."""

    async def ack(self) -> None:
        await closed_under_it()

    async def nack(self, requeue: bool) -> None:
        await closed_under_it()


async def test_an_ack_lost_with_its_channel_leaves_the_taker_running() -> None:
    delivery = RabbitDelivery.__new__(RabbitDelivery)
    delivery._message = ClosingMessage()  # type: ignore[assignment]

    await delivery.ack()  # the broker redelivers; the taker goes on
    await delivery.nack(requeue=True)


class LookChannel:
    """A channel opened for a look at a queue: closed under the look, or answering."""

    def __init__(self, closes: bool) -> None:
        self.closes = closes
        self.is_closed = False

    async def declare_queue(self, name: str, passive: bool) -> Any:
        if self.closes:
            await closed_under_it()
        return SimpleNamespace(declaration_result=SimpleNamespace(message_count=7))

    async def close(self) -> None:
        self.is_closed = True


class LookConnection:
    """Its first ``closes`` channels are closed under the look they were opened for;
    ``looks`` is set once ``wanted`` looks have begun."""

    def __init__(self, closes: int, wanted: int = 0) -> None:
        self.closes = closes
        self.opened = 0
        self.wanted = wanted
        self.looks = asyncio.Event()

    async def channel(self) -> LookChannel:
        self.opened += 1
        if self.opened == self.wanted:
            self.looks.set()
        return LookChannel(self.opened <= self.closes)


def transport_looking_through(connection: LookConnection) -> RabbitTransport:
    transport = RabbitTransport("amqp://guest:guest@127.0.0.1:1/")
    transport._connection = connection  # type: ignore[assignment]
    return transport


async def test_a_look_at_a_queue_closed_under_it_fails_as_a_broker_error() -> None:
    transport = transport_looking_through(LookConnection(closes=1))

    with pytest.raises(ConnectionError):
        await transport.queue_depth("q")
    assert await transport.queue_depth("q") == 7


async def test_the_queue_depth_gauge_outlives_a_look_closed_under_it() -> None:
    """What autoscaling reads: a look that fails is followed by the next one."""
    connection = LookConnection(closes=2, wanted=4)  # two closed, one answered, one more
    metrics = RunMetrics()
    metrics.pools.add("closing-pool")
    watching = asyncio.create_task(
        watch_queues(transport_looking_through(connection), metrics, every=0)
    )
    fourth_look = asyncio.create_task(connection.looks.wait())

    await asyncio.wait([watching, fourth_look], timeout=10, return_when=asyncio.FIRST_COMPLETED)

    assert not watching.done(), "the gauge's loop ended"
    assert QUEUE_DEPTH.labels("closing-pool")._value.get() == 7
    watching.cancel()
    fourth_look.cancel()


async def test_a_bounded_broker_call_tells_its_own_timeout_from_a_closing() -> None:
    with pytest.raises(TimeoutError):  # the bound's cancel is the task's own: it passes
        async with broker_call(0.01):
            await asyncio.get_running_loop().create_future()
    with pytest.raises(ConnectionError):
        async with broker_call(10):
            await closed_under_it()
