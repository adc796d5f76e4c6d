"""Waiting for a message to reach the dead-letter queue.

A broker dead-letters a rejected message on its own time (a quorum queue through its
log), and a coordinator rejects on its own loop: looking once, right after, is too
early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class KeepsDeadLetters(Protocol):
    """A transport that shows its dead letters (both twins; not part of the port)."""

    async def dead_letters(self, limit: int = 20) -> Sequence[tuple[bytes, Mapping[str, Any]]]: ...


async def dead_bodies(transport: KeepsDeadLetters) -> list[bytes]:
    return [body for body, _headers in await transport.dead_letters(limit=1000)]


async def until_dead_lettered(
    transport: KeepsDeadLetters, body: bytes, timeout: float = 10
) -> None:
    """Until ``body`` is in the dead-letter queue (TimeoutError past ``timeout``)."""
    async with asyncio.timeout(timeout):
        while body not in await dead_bodies(transport):
            await asyncio.sleep(0.05)
