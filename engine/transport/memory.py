"""The in-memory twin of the message broker, for embedded mode and tests.

It keeps the semantics the RabbitMQ transport has: a message is delivered to one
consumer at a time, at most ``prefetch`` unsettled per consumer; ack removes it, nack
with requeue puts it back at the head marked redelivered, nack without requeue moves
it to the queue's dead-letter list; closing a consumer requeues what it had not
settled. Broadcasts go to every current listener and are never stored.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.errors import ConveyorError
from contracts.topology import topic_matches


@dataclass
class _Message:
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False


@dataclass
class _Queue:
    messages: deque[_Message] = field(default_factory=deque)
    dead: list[_Message] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class MemoryDelivery:
    __slots__ = ("_consumer", "_message", "_settled", "body", "headers", "redelivered")

    settleable = True
    """No channel to lose: what a consumer holds stays its own until it closes."""

    def __init__(self, consumer: MemoryConsumer, message: _Message) -> None:
        self._consumer = consumer
        self._message = message
        self._settled = False
        self.body = message.body
        self.redelivered = message.redelivered
        self.headers = message.headers

    async def ack(self) -> None:
        await self._settle(requeue=None)

    async def nack(self, *, requeue: bool) -> None:
        await self._settle(requeue=requeue)

    async def _settle(self, *, requeue: bool | None) -> None:
        if self._settled:
            raise ConveyorError("delivery settled twice")
        self._settled = True
        await self._consumer._settle(self._message, requeue)


class MemoryConsumer:
    def __init__(self, queue: _Queue, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._queue = queue
        self._prefetch = prefetch
        self._unsettled: dict[int, _Message] = {}
        self._earlier: dict[int, _Message] = {}
        """Unsettled from before a ``reopen``: no longer counted against the prefetch."""
        self._closed = False
        self._drained = False

    def __aiter__(self) -> AsyncIterator[MemoryDelivery]:
        return self

    async def __anext__(self) -> MemoryDelivery:
        q = self._queue
        async with q.changed:
            await q.changed.wait_for(
                lambda: (
                    self._closed
                    or self._drained
                    or (bool(q.messages) and len(self._unsettled) < self._prefetch)
                )
            )
            if self._closed or self._drained:
                raise StopAsyncIteration
            message = q.messages.popleft()
            self._unsettled[id(message)] = message
        return MemoryDelivery(self, message)

    def ready(self, limit: int) -> list[MemoryDelivery]:
        q = self._queue
        out: list[MemoryDelivery] = []
        while (
            len(out) < limit
            and not (self._closed or self._drained)
            and q.messages
            and len(self._unsettled) < self._prefetch
        ):
            message = q.messages.popleft()
            self._unsettled[id(message)] = message
            out.append(MemoryDelivery(self, message))
        return out

    async def _settle(self, message: _Message, requeue: bool | None) -> None:
        q = self._queue
        async with q.changed:
            if (
                self._unsettled.pop(id(message), None) is None
                and self._earlier.pop(id(message), None) is None
            ):
                return  # already returned to the queue by close()
            if requeue is True:
                message.redelivered = True
                q.messages.appendleft(message)
            elif requeue is False:
                q.dead.append(message)
            q.changed.notify_all()

    async def drain(self) -> None:
        # Nothing is ever on its way here: a message is handed over when it is taken.
        q = self._queue
        async with q.changed:
            self._drained = True
            q.changed.notify_all()

    async def reopen(self, prefetch: int) -> None:
        q = self._queue
        async with q.changed:
            self._earlier.update(self._unsettled)
            self._unsettled = {}
            self._prefetch = prefetch
            self._drained = False
            q.changed.notify_all()

    async def close(self) -> None:
        q = self._queue
        async with q.changed:
            self._closed = True
            unsettled = [*self._earlier.values(), *self._unsettled.values()]
            for message in reversed(unsettled):
                message.redelivered = True
                q.messages.appendleft(message)
            self._unsettled.clear()
            self._earlier.clear()
            q.changed.notify_all()


class _Listener:
    def __init__(self, owner: MemoryTransport, topic: str) -> None:
        self._owner = owner
        self._topic = topic
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        owner._listeners.setdefault(topic, set()).add(self)

    async def ready(self) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        body = await self._inbox.get()
        if body is None:
            raise StopAsyncIteration
        return body

    async def aclose(self) -> None:
        self._owner._listeners.get(self._topic, set()).discard(self)
        self._inbox.put_nowait(None)


class MemoryTransport:
    """Implements ``contracts.ports.Transport`` inside one process."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._listeners: dict[str, set[_Listener]] = {}
        self._consumers: list[MemoryConsumer] = []
        self._bindings: list[tuple[str, str]] = []

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for consumer in self._consumers:
            await consumer.close()
        self._consumers.clear()
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                await listener.aclose()

    async def publish(
        self, queue: str, bodies: Sequence[bytes], headers: Mapping[str, str] | None = None
    ) -> None:
        q = self._queue(queue)
        async with q.changed:
            q.messages.extend(_Message(body, dict(headers or {})) for body in bodies)
            q.changed.notify_all()

    async def consume(self, queue: str, *, prefetch: int) -> MemoryConsumer:
        consumer = MemoryConsumer(self._queue(queue), prefetch)
        self._consumers.append(consumer)
        return consumer

    async def broadcast(self, topic: str, body: bytes) -> None:
        for listener in list(self._listeners.get(topic, ())):
            listener._inbox.put_nowait(body)

    def listen(self, topic: str) -> _Listener:
        return _Listener(self, topic)

    async def announce(
        self, routing_key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        for queue in {q for pattern, q in self._bindings if topic_matches(pattern, routing_key)}:
            await self.publish(queue, [body], {**(headers or {}), "routing_key": routing_key})

    async def bind_announcements(self, queue: str, pattern: str) -> None:
        if (pattern, queue) not in self._bindings:
            self._bindings.append((pattern, queue))

    # Introspection for tests and `conveyor` diagnostics.
    async def queue_depth(self, queue: str) -> int | None:
        found = self._queues.get(queue)
        return None if found is None else len(found.messages)

    def pending(self) -> int:
        """Messages queued or delivered but not settled, over all queues."""
        queued = sum(len(q.messages) for q in self._queues.values())
        return queued + sum(len(c._unsettled) + len(c._earlier) for c in self._consumers)

    async def dead_letters(self, limit: int = 20) -> list[tuple[bytes, Mapping[str, Any]]]:
        """Every queue's dead letters, like the broker's one dead-letter queue."""
        dead = [m for q in self._queues.values() for m in q.dead]
        return [(m.body, m.headers) for m in dead[:limit]]

    async def dead_letter_count(self) -> int:
        return sum(len(q.dead) for q in self._queues.values())
