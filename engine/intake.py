"""Shard intake: taking messages off a coordinator shard queue and settling each once.

Whatever has arrived together is handled together: events of one run held live are
appended, folded and decided on in one go (one log round trip, one decision pass),
which is what keeps a big fan-out cheap. Anything else (a submission, a run not held
here, heartbeats, wake-ups, a group that failed) takes the one-by-one path, where a
message that keeps failing is dead-lettered instead of looping forever.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Protocol

import structlog

from contracts.codec import CoordinatorInput, DecodeError, decode_coordinator_input
from contracts.errors import ConveyorError
from contracts.events import Event, RunSubmitted
from contracts.ports import Consumer, Delivery, processing
from contracts.signing import SENT_BY, SIGNER_HEADER, Role

log = structlog.get_logger("conveyor.coordinator")

Decoded = tuple[list[CoordinatorInput], Role | None]
"""A delivery's messages and the role that signed them."""

POISON_LIMIT = 5
"""Failures of one message before it is dead-lettered rather than retried again."""


def _decode(delivery: Delivery) -> Decoded:
    """The messages of a delivery, if its signer may send every kind of them, and the
    signer's role (None: unsigned, as within one process)."""
    inputs = decode_coordinator_input(delivery.body)
    signer = delivery.headers.get(SIGNER_HEADER)
    if signer is None:
        return inputs, None
    role = Role(signer)
    allowed = SENT_BY[role]
    for message in inputs:
        kind = str(type(message).__struct_config__.tag)
        if kind not in allowed:
            raise DecodeError(f"a {signer} may not send {kind}")
    return inputs, role


class Handler(Protocol):
    def groups(self, event: Event, shard: int, sender: Role | None) -> bool:
        """Whether ``event``, off queue ``shard`` from ``sender``, may be handled with the
        others of its run: the run is live in memory here, on that shard, and takes it
        from that sender (if not, the one-by-one path refuses it, saying why)."""
        ...

    async def handle_group(self, events: list[Event]) -> bool:
        """Handle events of one live run together; False to fall back to one by one."""
        ...

    async def handle(
        self, message: CoordinatorInput, shard: int | None = None, sender: Role | None = None
    ) -> None:
        """Handle one message that came off queue ``shard``, signed by ``sender``; raise
        to have it requeued (or dead-lettered if not retryable)."""
        ...


class ShardIntake:
    def __init__(self, handler: Handler, prefetch: int, *, count_failures: bool = True) -> None:
        self._handler = handler
        self._prefetch = prefetch
        self._count_failures = count_failures
        self._failures: dict[bytes, int] = {}

    async def consume(self, consumer: Consumer, shard: int) -> None:
        async for delivery in consumer:
            batch = [delivery, *consumer.ready(self._prefetch - 1)]
            groups: dict[str, list[Event]] = {}
            grouped: list[tuple[Delivery, set[str]]] = []
            singles: list[tuple[Delivery, Decoded | None]] = []
            for item in batch:
                try:
                    inputs, sender = decoded = _decode(item)
                except Exception:  # the one-by-one path dead-letters it with the reason
                    singles.append((item, None))
                    continue
                events = [
                    m for m in inputs if isinstance(m, Event) and self._groupable(m, shard, sender)
                ]
                if len(events) == len(inputs):
                    runs: set[str] = set()
                    for event in events:
                        groups.setdefault(event.run_id, []).append(event)
                        runs.add(event.run_id)
                    grouped.append((item, runs))
                else:
                    singles.append((item, decoded))
            failed = {
                run_id
                for run_id, events in groups.items()
                if not await self._handler.handle_group(events)
            }
            for item, runs in grouped:
                if runs & failed:
                    await self._settle_one(item, None, shard)  # one by one, carefully
                else:
                    await item.ack()
            for item, known in singles:
                await self._settle_one(item, known, shard)

    def _groupable(self, event: Event, shard: int, sender: Role | None) -> bool:
        return not isinstance(event, RunSubmitted) and self._handler.groups(event, shard, sender)

    async def _settle_one(self, delivery: Delivery, decoded: Decoded | None, shard: int) -> None:
        """Handle one message and settle its delivery (the path every message can take)."""
        try:
            async with processing(delivery):
                inputs, sender = decoded or _decode(delivery)
                for message in inputs:
                    await self._guarded(message, delivery.body, shard, sender)
        except ConveyorError as exc:
            if exc.retryable:
                log.exception("event handling failed; message requeued")
            else:
                log.error("dead-lettered a message", error=exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event handling failed; message requeued")

    async def _guarded(
        self, message: CoordinatorInput, body: bytes, shard: int, sender: Role | None
    ) -> None:
        """Handle a message; one that keeps failing is dead-lettered instead of looping."""
        if not isinstance(message, Event):
            await self._handler.handle(message, shard, sender)
            return
        key = hashlib.blake2b(body, digest_size=16).digest()
        try:
            with structlog.contextvars.bound_contextvars(run_id=message.run_id):
                await self._handler.handle(message, shard, sender)
        except ConveyorError as exc:
            if exc.retryable:
                self._count_failure(key, exc)
            raise
        except Exception as exc:
            self._count_failure(key, exc)
            raise
        self._failures.pop(key, None)

    def _count_failure(self, key: bytes, exc: Exception) -> None:
        if not self._count_failures:
            return  # the broker counts deliveries and dead-letters past its limit
        count = self._failures.get(key, 0) + 1
        if count < POISON_LIMIT:
            self._failures[key] = count
            return
        self._failures.pop(key, None)
        raise ConveyorError(
            f"handling failed {count} times, dead-lettered: {type(exc).__name__}: {exc}",
            retryable=False,
        ) from exc
