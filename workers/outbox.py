"""Events on their way from a worker to coordinator shards, coalesced per queue.

The first event for a queue goes out at once; events that arrive while that publish
waits for the broker's confirm go out together in the next message. A lone result
therefore waits for nothing, and a busy worker sends one message per confirm round
trip instead of one per event.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

from contracts.codec import encode_events
from contracts.events import Event
from contracts.ports import Transport

MAX_EVENTS_PER_MESSAGE = 256
"""Results may be up to 64 KiB each (larger ones are claim-checked): keep messages sane."""


class EventOutbox:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._pending: dict[str, list[tuple[list[Event], asyncio.Future[None]]]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def send(self, queue: str, events: Sequence[Event]) -> None:
        """Returns once the broker holds ``events`` durably (raises if it could not)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._pending.setdefault(queue, []).append((list(events), future))
        if queue not in self._flushers:
            # In a context of its own: it carries other attempts' events too, and what
            # the transport logs while publishing must not name this attempt's ids.
            self._flushers[queue] = asyncio.create_task(
                self._flush(queue), name="outbox", context=contextvars.Context()
            )
        # A caller that is cancelled does not take its events back: they are queued
        # already, and the flusher skips a future that is done (cancelled with it).
        await future

    async def _flush(self, queue: str) -> None:
        try:
            # One loop tick first: whatever else finishes in this tick rides along.
            await asyncio.sleep(0)
            while waiting := self._pending.pop(queue, None):
                events = [event for batch, _future in waiting for event in batch]
                try:
                    bodies = [
                        encode_events(events[start : start + MAX_EVENTS_PER_MESSAGE])
                        for start in range(0, len(events), MAX_EVENTS_PER_MESSAGE)
                    ]
                    await self._transport.publish(queue, bodies)
                except Exception as exc:
                    for _batch, future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _batch, future in waiting:
                        if not future.done():
                            future.set_result(None)
        finally:
            del self._flushers[queue]

    async def drain(self) -> None:
        """Wait until everything handed over so far is published."""
        while self._flushers:
            await asyncio.gather(*self._flushers.values(), return_exceptions=True)


def _retrieve(future: asyncio.Future[None]) -> None:
    # The caller may have been cancelled and never look: do not warn about it.
    if not future.cancelled():
        future.exception()
