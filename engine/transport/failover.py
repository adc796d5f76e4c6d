"""Connections to a RabbitMQ cluster: a robust connection that goes to the next node,
with channels that never wait for a connection that is gone."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aio_pika.exceptions import ChannelInvalidStateError
from aio_pika.robust_channel import RobustChannel
from aio_pika.robust_connection import RobustConnection
from yarl import URL


class GuardedChannel(RobustChannel):
    """A robust channel whose opening gives up when its connection closes meanwhile.

    aio-pika opens a channel (and reopens it, to restore it) by first waiting for its
    connection to be ready, and a connection that has closed never will be. A reopen
    stuck there holds the channel's restore lock: when the robust connection reaches
    another node, its restore of this channel waits behind that lock for good, and so
    does every channel after it (seen when a cluster node stopped just as the client
    had gone to another node that then closed).
    """

    async def _open(self) -> None:
        transport = self._connection.transport
        if transport is None or transport.connection.is_closed:
            raise ChannelInvalidStateError("the channel's connection is closed")
        opening = asyncio.ensure_future(super()._open())
        closed = transport.connection.closing
        try:
            await asyncio.wait({opening, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()  # only this observer of the closing
        if not opening.done():
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await opening
            raise ChannelInvalidStateError("the channel's connection closed as it opened")
        opening.result()


class FailoverConnection(RobustConnection):
    """A robust connection to a cluster: each time it connects again it goes to the next
    node's URL (``URLS``), so losing a node moves it to a survivor."""

    CHANNEL_CLASS = GuardedChannel
    URLS: tuple[URL, ...] = ()
    _turn = 0

    def _rotate(self) -> None:
        if len(self.URLS) > 1:
            self._turn += 1
            self.url = self.URLS[self._turn % len(self.URLS)]

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        self._rotate()
        await super()._on_connection_close(closing)

    async def _RobustConnection__connect_transport(self) -> None:
        # A failed attempt to reconnect (the next node is down too) moves on as well.
        try:
            await super()._RobustConnection__connect_transport()  # type: ignore[misc]
        except Exception:
            self._rotate()
            raise


def cluster_urls(url: str) -> list[str]:
    """``amqp://a:5672/,amqp://b:5672/``: the nodes of a cluster, tried in turn."""
    return [part.strip() for part in url.split(",") if part.strip()]
