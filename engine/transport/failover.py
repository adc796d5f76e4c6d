"""Connections to a RabbitMQ cluster: a robust connection that goes to the next node."""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika.robust_connection import RobustConnection
from yarl import URL


class FailoverConnection(RobustConnection):
    """A robust connection to a cluster: each time it connects again it goes to the next
    node's URL (``URLS``), so losing a node moves it to a survivor."""

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
