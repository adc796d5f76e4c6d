"""A RabbitMQ publish whose channel closes under it is tried again; a publisher that is
itself cancelled still stops. (aiormq fails the futures of what it closes with
``CancelledError``, so the two look alike to the code awaiting them.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.transport.rabbit_consumer import RabbitDelivery
from engine.transport.rabbitmq import RabbitTransport


async def closed_under_it() -> None:
    """What awaiting a confirm or an ack does when aiormq closes its channel: its future
    fails with ``CancelledError``, aiormq's default reason for a close."""
    closed = asyncio.get_running_loop().create_future()
    closed.set_exception(asyncio.CancelledError())
    await closed


class ClosingExchange:
    """Closed under its first ``closes`` publishes; confirms the rest."""

    def __init__(self, closes: int) -> None:
        self.closes = closes
        self.published: list[bytes] = []

    async def publish(self, message: Any, routing_key: str, *, mandatory: bool) -> object:
        if self.closes:
            self.closes -= 1
            await closed_under_it()
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


async def test_a_publish_whose_channel_closes_under_it_is_tried_again() -> None:
    exchange = ClosingExchange(closes=2)

    async with asyncio.timeout(10):
        await transport_on(exchange).publish("q", [b"one"])

    assert exchange.published == [b"one"]
    assert exchange.closes == 0


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
