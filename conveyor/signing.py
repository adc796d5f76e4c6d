"""A transport that signs what its process sends and opens only what it may receive.

Wraps the real transport of a distributed process (see ``contracts.signing``): a
coordinator signs as coordinator and hears workers, clients and itself; a worker signs
as worker and hears only the coordinator; a client signs as client. A message that
does not open is dead-lettered (queues) or dropped (broadcasts), and logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import structlog

from contracts.ports import Consumer, Delivery, Listener, Transport
from contracts.signing import SIGNATURE_HEADER, SIGNER_HEADER, KeyRing, Role, SignatureError

log = structlog.get_logger("conveyor.signing")


class OpenedDelivery:
    """A delivery whose signature checked out: its body without the signature, and the
    signer's role among its headers."""

    def __init__(self, delivery: Delivery, body: bytes, role: Role) -> None:
        self._delivery = delivery
        self.body = body
        self.redelivered = delivery.redelivered
        self.headers: Mapping[str, Any] = {**delivery.headers, SIGNER_HEADER: str(role)}

    @property
    def settleable(self) -> bool:
        return self._delivery.settleable

    async def ack(self) -> None:
        await self._delivery.ack()

    async def nack(self, *, requeue: bool) -> None:
        await self._delivery.nack(requeue=requeue)


class SigningConsumer:
    def __init__(self, inner: Consumer, keys: KeyRing, accept: frozenset[Role]) -> None:
        self._inner = inner
        self._keys = keys
        self._accept = accept
        self._refusing: set[asyncio.Task[None]] = set()
        self.refused = 0

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._opened()

    async def _opened(self) -> AsyncIterator[Delivery]:
        async for delivery in self._inner:
            opened = self._open(delivery)
            if isinstance(opened, str):
                await self._refuse(delivery, opened)
            else:
                yield opened

    def ready(self, limit: int) -> Sequence[Delivery]:
        out: list[Delivery] = []
        for delivery in self._inner.ready(limit):
            opened = self._open(delivery)
            if isinstance(opened, str):
                # Settled off this synchronous path, as soon as the loop runs.
                task = asyncio.get_running_loop().create_task(self._refuse(delivery, opened))
                self._refusing.add(task)
                task.add_done_callback(self._refusing.discard)
            else:
                out.append(opened)
        return out

    async def drain(self) -> None:
        await self._inner.drain()

    async def reopen(self, prefetch: int) -> None:
        await self._inner.reopen(prefetch)

    def _open(self, delivery: Delivery) -> OpenedDelivery | str:
        """The delivery opened, or why it does not open."""
        signature = delivery.headers.get(SIGNATURE_HEADER)
        try:
            if signature is None:
                role, body = self._keys.open(delivery.body, self._accept)
            else:
                line = signature if isinstance(signature, bytes) else str(signature).encode()
                role, body = self._keys.check(line, delivery.body, self._accept)
        except SignatureError as exc:
            return exc.message
        return OpenedDelivery(delivery, body, role)

    async def _refuse(self, delivery: Delivery, why: str) -> None:
        self.refused += 1
        log.error("refused a message it cannot authenticate; dead-lettered", reason=why)
        await delivery.nack(requeue=False)

    async def close(self) -> None:
        await self._inner.close()


class SigningListener:
    def __init__(self, inner: Listener, keys: KeyRing, accept: frozenset[Role]) -> None:
        self._inner = inner
        self._keys = keys
        self._accept = accept

    async def ready(self) -> None:
        await self._inner.ready()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._opened()

    async def _opened(self) -> AsyncIterator[bytes]:
        async for body in self._inner:
            try:
                _role, opened = self._keys.open(body, self._accept)
            except SignatureError as exc:
                log.error("dropped a broadcast it cannot authenticate", reason=exc.message)
                continue
            yield opened

    async def aclose(self) -> None:
        await self._inner.aclose()


class SigningTransport:
    """``Transport`` that signs as ``role`` and accepts messages signed by ``accept``."""

    def __init__(
        self, inner: Transport, keys: KeyRing, role: Role, accept: frozenset[Role]
    ) -> None:
        self.inner = inner
        self._keys = keys
        self._role = role
        self._accept = accept

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def publish(
        self, queue: str, bodies: Sequence[bytes], headers: Mapping[str, str] | None = None
    ) -> None:
        signed = [self._keys.sign(self._role, body) for body in bodies]
        await self.inner.publish(queue, signed, headers)

    async def consume(self, queue: str, *, prefetch: int) -> Consumer:
        return SigningConsumer(
            await self.inner.consume(queue, prefetch=prefetch), self._keys, self._accept
        )

    async def broadcast(self, topic: str, body: bytes) -> None:
        await self.inner.broadcast(topic, self._keys.sign(self._role, body))

    def listen(self, topic: str) -> Listener:
        return SigningListener(self.inner.listen(topic), self._keys, self._accept)

    async def announce(
        self, routing_key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        # The body stays the CloudEvent that other services read; the signature goes
        # beside it, where they may check it too (docs/triggers.md).
        signature = self._keys.signature(self._role, body).decode("ascii")
        await self.inner.announce(
            routing_key, body, {**(headers or {}), SIGNATURE_HEADER: signature}
        )

    async def bind_announcements(self, queue: str, pattern: str) -> None:
        await self.inner.bind_announcements(queue, pattern)

    def __getattr__(self, name: str) -> Any:
        # The real transport's own operations (dead letters, reconnect hooks).
        return getattr(self.inner, name)
