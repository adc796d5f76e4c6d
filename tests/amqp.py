"""Talking to the tests' RabbitMQ directly, as anyone with access to the broker can."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel


@asynccontextmanager
async def amqp_channel(url: str, **options: Any) -> AsyncIterator[AbstractChannel]:
    """A channel on a connection of its own; both closed on the way out, the channel first.

    A channel still open when its connection closes is closed by a callback that runs
    after the connection's ``close`` returns: at the end of a test it finds the event
    loop gone, and Python reports the error at some later test.
    """
    async with await aio_pika.connect(url) as connection, connection.channel(**options) as channel:
        yield channel
