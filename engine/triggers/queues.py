"""Queue sources: each message on another service's RabbitMQ queue starts one run.

A message is acknowledged only after its arrival is admitted (durably) and handled:
a server killed before that leaves the message on the queue for the next consumer,
whose admission finds the same key and so makes no second run. The key is the
message's ``message_id``, else the trigger's ``dedup`` expression, else a digest of
the body. A message that cannot start a run (not JSON when the params need it, a bad
parameter) is dead-lettered to ``<queue>.dead`` with the reason in the
``x-conveyor-reason`` header, then acknowledged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from contracts.errors import ConveyorError, ExpressionError
from contracts.expressions import Expression
from contracts.triggers import QueueTrigger
from engine.triggers.firing import Arrival, Firing, encode_arrival
from engine.triggers.registry import Registry, Served

log = structlog.get_logger("conveyor.queues")

REASON_HEADER = "x-conveyor-reason"
CONNECT_TIMEOUT = 10.0
"""Longest wait for another service's broker: a server's refreshes wait on it."""

RETRY_FIRST, RETRY_LONGEST = 1.0, 30.0
"""Seconds before a source not started is tried again, doubling after each failure."""

SourceKey = tuple[str, int, str]
"""A queue source: workflow, version, trigger."""


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


def message_names(message: AbstractIncomingMessage) -> dict[str, Any]:
    text = message.body.decode("utf-8", errors="replace")
    try:
        body: Any = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    headers = {
        str(k): v if isinstance(v, str | int | float | bool) else str(v)
        for k, v in (message.headers or {}).items()
    }
    return {
        "body": body,
        "headers": headers,
        "routing_key": message.routing_key or "",
        "message_id": message.message_id,
        "text": text,
    }


def message_key(spec: QueueTrigger, message: AbstractIncomingMessage, names: dict[str, Any]) -> str:
    if message.message_id:
        return f"id:{message.message_id}"[:200]
    if spec.dedup is not None:
        value = Expression(spec.dedup).evaluate(names)
        if value is None or value == "":
            raise ExpressionError(f"{spec.dedup!r} gave no id")
        return f"dedup:{value}"[:200]
    return "sha256:" + hashlib.sha256(message.body).hexdigest()


class QueueSources:
    def __init__(
        self, registry: Registry, firing: Firing, *, default_url: str | None = None
    ) -> None:
        self._registry = registry
        self._firing = firing
        self._default_url = default_url
        self._connections: dict[str, AbstractRobustConnection] = {}
        self._consuming: dict[SourceKey, tuple[aio_pika.abc.AbstractChannel, str]] = {}
        self._not_started: dict[SourceKey, tuple[str, int, float]] = {}
        """Of each source not started: why, its failed tries, and when to try again."""

    @property
    def not_started(self) -> dict[SourceKey, str]:
        """Queue sources served but not consuming, and why (each ``apply`` tries again:
        a broker away when the server started is consumed from once it answers)."""
        return {key: why for key, (why, _, _) in self._not_started.items()}

    async def apply(self) -> None:
        wanted = {
            (s.workflow.name, s.version, s.trigger.name): s for s in self._registry.served("queue")
        }
        for key in set(self._consuming) - set(wanted):
            channel, _ = self._consuming.pop(key)
            await channel.close()
        for key in set(self._not_started) - set(wanted):
            del self._not_started[key]
        for key, served in wanted.items():
            said, tries, due = self._not_started.get(key, ("", 0, 0.0))
            if key in self._consuming or time.monotonic() < due:
                continue
            try:
                self._consuming[key] = await self._consume(served)
            except (ConveyorError, OSError, aio_pika.exceptions.AMQPError) as exc:
                why = str(exc) or type(exc).__name__
                if why != said:  # said once, not on every try
                    log.error("queue source not started; trying again", trigger=key, error=why)
                delay = min(RETRY_LONGEST, RETRY_FIRST * 2**tries)
                self._not_started[key] = (why, tries + 1, time.monotonic() + delay)
            else:
                if self._not_started.pop(key, None) is not None:
                    log.info("queue source started after all", trigger=key)

    async def stop(self) -> None:
        for channel, _ in self._consuming.values():
            if not channel.is_closed:
                await channel.close()
        self._consuming.clear()
        for connection in self._connections.values():
            await connection.close()
        self._connections.clear()

    async def _connection(self, spec: QueueTrigger) -> AbstractRobustConnection:
        url = os.environ.get(spec.url_env) if spec.url_env else self._default_url
        if not url:
            raise ConveyorError(
                f"queue {spec.queue!r}: no broker to consume from (set CONVEYOR_AMQP_URL, or"
                f" {spec.url_env or 'url_env'} for another broker)"
            )
        if url not in self._connections:
            self._connections[url] = await aio_pika.connect_robust(url, timeout=CONNECT_TIMEOUT)
        return self._connections[url]

    async def _consume(self, served: Served) -> tuple[aio_pika.abc.AbstractChannel, str]:
        spec = served.trigger.queue
        assert spec is not None
        connection = await self._connection(spec)
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=spec.prefetch)
        try:
            queue = await channel.declare_queue(spec.queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=spec.prefetch)
            queue = await channel.declare_queue(spec.queue, durable=True)
        await channel.declare_queue(dead_letter_queue(spec.queue), durable=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._on_message(served, spec, channel, message)

        tag = await queue.consume(on_message)
        log.info("consuming", queue=spec.queue, workflow=served.workflow.name)
        return channel, tag

    async def _on_message(
        self,
        served: Served,
        spec: QueueTrigger,
        channel: aio_pika.abc.AbstractChannel,
        message: AbstractIncomingMessage,
    ) -> None:
        names = message_names(message)
        try:
            key = message_key(spec, message, names)
        except ExpressionError as exc:
            await self._dead_letter(channel, spec, message, f"dedup: {exc}")
            return
        arrival = Arrival(
            workflow=served.workflow.name,
            version=served.version,
            trigger=served.trigger.name,
            kind="queue",
            key=key,
            names=names,
            at=time.time(),
        )
        # An invalid message is dead-lettered before anything is admitted for it, so a
        # redelivery after a crash is dead-lettered too (at least once), never dropped.
        problem = await self._firing.check(arrival)
        if problem is not None:
            await self._firing.record(arrival, "failed", problem)
            await self._dead_letter(channel, spec, message, problem)
            return
        try:
            if await self._firing.store.admit(
                arrival.idempotency_key, encode_arrival(arrival), keep=7 * 86400
            ):
                await self._firing.handle(arrival)
        except (ConveyorError, OSError) as exc:
            # Admitted but not started: the sweep starts it; the message may go.
            log.warning("run not started yet", key=arrival.idempotency_key, error=str(exc))
        await message.ack()

    async def _dead_letter(
        self,
        channel: aio_pika.abc.AbstractChannel,
        spec: QueueTrigger,
        message: AbstractIncomingMessage,
        reason: str,
    ) -> None:
        headers = dict(message.headers or {})
        headers[REASON_HEADER] = reason[:1000]
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=dead_letter_queue(spec.queue),
        )
        await message.ack()
        log.warning("message dead-lettered", queue=spec.queue, reason=reason)
