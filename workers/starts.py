"""Attempts' starts held back for a moment, so a quick step's outcome carries its start.

A worker acks a task message once the ``TaskStarted`` of its attempts is confirmed.
Sent on its own, the start of a step that ends at once is a write to the broker's log
that the outcome then queues behind (on a quorum queue, most of a millisecond of every
quick step's hop). Held for ``START_HOLD``, it goes out with the outcome instead: one
message, one write. A start no outcome has carried by then is sent on its own.

Each held start has a future that resolves once the start is confirmed sent (or fails
with what its send raised): the message's ack waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from contracts.events import Event, TaskStarted
from contracts.messages import TaskReady
from contracts.vocabulary import AttemptRef
from workers.outbox import EventOutbox
from workers.outcomes import started_event

START_HOLD = 0.002
"""Seconds the start of a one-task message is held. Longer holds measured worse for
fan-outs: a held message is unacked, and the broker sends the next one later."""


class HeldStarts:
    def __init__(self, outbox: EventOutbox) -> None:
        self._outbox = outbox
        self._held: dict[AttemptRef, tuple[TaskStarted, asyncio.Future[None]]] = {}

    def hold(self, task: TaskReady, at: float, worker: str) -> asyncio.Future[None]:
        """Hold back the attempt's start (before it can end: no outcome overtakes it)."""
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        confirmed.add_done_callback(_retrieve)
        self._held[task.ref] = (started_event(task, at, worker), confirmed)
        return confirmed

    async def send_with(
        self, queue: str, ref: AttemptRef, event: Event, *, last: bool = False
    ) -> None:
        """Send ``event``, with the attempt's start if that is still held.

        If the send fails, the start stays held for what is sent instead; unless this
        was the ``last`` try, which gives the start up (its message goes back).
        """
        held = self._held.pop(ref, None)
        if held is None:
            await self._outbox.send(queue, [event])
            return
        started, confirmed = held
        try:
            await self._outbox.send(queue, [started, event])
        except Exception as exc:
            if last:
                _fail(confirmed, exc)
            else:
                self._held.setdefault(ref, held)
            raise
        except BaseException as exc:
            _fail(confirmed, exc)
            raise
        _succeed(confirmed)

    async def announce(self, tasks: Sequence[TaskReady]) -> None:
        """Send the starts of ``tasks`` that no outcome has carried yet."""
        by_queue: dict[str, list[tuple[TaskStarted, asyncio.Future[None]]]] = {}
        for task in tasks:
            held = self._held.pop(task.ref, None)
            if held is not None:
                by_queue.setdefault(task.reply_to, []).append(held)
        for queue, starts in by_queue.items():
            try:
                await self._outbox.send(queue, [started for started, _confirmed in starts])
            except BaseException as exc:
                for _started, confirmed in starts:
                    _fail(confirmed, exc)
                raise
            for _started, confirmed in starts:
                _succeed(confirmed)

    def forget(self, tasks: Sequence[TaskReady], confirmed: Sequence[asyncio.Future[None]]) -> None:
        """Drop what is still held for a message given up on (and only its own: the
        same attempt may have been delivered again since)."""
        for task, future in zip(tasks, confirmed, strict=True):
            held = self._held.get(task.ref)
            if held is not None and held[1] is future:
                del self._held[task.ref]


def _succeed(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    # A cancellation becomes an error: the one waiting was not the one cancelled.
    if future.done():
        return
    if isinstance(exc, Exception):
        future.set_exception(exc)
    else:
        future.set_exception(ConnectionError(f"not sent: {type(exc).__name__}"))


def _retrieve(future: asyncio.Future[None]) -> None:
    # The start of a message given up on is never awaited: do not warn about it.
    if not future.cancelled():
        future.exception()
