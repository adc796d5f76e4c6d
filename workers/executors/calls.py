"""``http`` and ``amqp`` steps: a request to another service, made by the worker itself
(no process is spawned), its answer the step's result.

HTTP: a status outside ``expect`` (default any 2xx) fails the attempt, retryably for
5xx, 408 and 429 (another try may work) and not for other 4xx. Only http and https
URLs are called; a response over ``max_bytes`` fails the attempt. AMQP: the message
is published with a fresh ``correlation_id`` and RabbitMQ's direct reply-to, and the
reply with that id is the result; no reply within ``wait`` is a timeout.

Each client is imported by the first step that calls with it: together they take 0.1 to
0.2 s to import, which an engine whose steps call no service (most) is spared.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.messages import TaskReady
from contracts.vocabulary import FailureKind
from workers.executors.base import LogEmitter, StepOutcome, parse_result

if TYPE_CHECKING:
    import aio_pika
    import httpx
    from aio_pika.abc import AbstractIncomingMessage

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def with_env(text: str, env: dict[str, str]) -> str:
    """``${NAME}`` replaced by the step's env value (only the step's: never the worker's)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def _payload(body: Any) -> tuple[bytes, str | None]:
    if body is None:
        return b"", None
    if isinstance(body, dict | list | int | float | bool):
        return json.dumps(body).encode(), "application/json"
    return str(body).encode(), "text/plain; charset=utf-8"


def _failed(error: str, *, retryable: bool, reason: FailureKind = FailureKind.ERROR) -> StepOutcome:
    return StepOutcome(ok=False, error=error, retryable=retryable, reason=reason)


class HttpExecutor:
    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # The client is made for the first http step instead: building its TLS context
        # reads the system's CA certificates, most of the start of an embedded engine.
        return None

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        import httpx

        if self._client is None:  # no await in between: concurrent first steps share one
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=None)
        return self._client

    async def run(self, task: TaskReady, emit: LogEmitter, workdir: Path) -> StepOutcome:
        import httpx

        client = self._http()
        request = task.step.call or {}
        env = task.step.env
        url = with_env(str(request["url"]), env)
        if not url.startswith(("http://", "https://")):
            return _failed(f"not an http(s) URL: {url[:200]!r}", retryable=False)
        headers = {k: with_env(str(v), env) for k, v in (request.get("headers") or {}).items()}
        content, content_type = _payload(request.get("body"))
        if content_type and not any(k.lower() == "content-type" for k in headers):
            headers["content-type"] = content_type
        method = str(request.get("method", "GET"))
        limit = int(request.get("max_bytes") or 1 << 20)
        emit("system", f"{method} {url}")
        try:
            async with client.stream(
                method, url, headers=headers, content=content or None
            ) as answer:
                data = bytearray()
                async for chunk in answer.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        return _failed(f"response from {url} over {limit:,} bytes", retryable=False)
        except httpx.HTTPError as exc:
            return _failed(f"{method} {url}: {type(exc).__name__}: {exc}", retryable=True)
        status = answer.status_code
        text = data.decode(answer.encoding or "utf-8", errors="replace")
        emit("system", f"HTTP {status} ({len(data):,} bytes)")
        expected = request.get("expect")
        ok = status in expected if expected else 200 <= status < 300
        if not ok:
            return _failed(
                f"{method} {url} answered HTTP {status}: {text[:300]}",
                retryable=status in RETRYABLE_STATUSES,
            )
        is_json = "json" in answer.headers.get("content-type", "")
        result = parse_result(text) if is_json else text
        return StepOutcome(ok=True, result=result)


class AmqpExecutor:
    """Publishes on the broker the step names; one connection per broker URL."""

    def __init__(self) -> None:
        self._connections: dict[str, aio_pika.abc.AbstractRobustConnection] = {}
        # Steps that start together must not each connect: the connections that lost the
        # race would never be closed.
        self._connecting = asyncio.Lock()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for connection in self._connections.values():
            await connection.close()
        self._connections.clear()

    async def _connection(self, url: str) -> aio_pika.abc.AbstractRobustConnection:
        import aio_pika

        async with self._connecting:
            if url not in self._connections:
                self._connections[url] = await aio_pika.connect_robust(url)
            return self._connections[url]

    async def run(self, task: TaskReady, emit: LogEmitter, workdir: Path) -> StepOutcome:
        import aio_pika

        request = task.step.call or {}
        url = os.environ.get(str(request.get("url_env", "CONVEYOR_AMQP_URL")))
        if not url:
            return _failed(
                f"no broker: ${request.get('url_env')} is not set on this worker",
                retryable=False,
                reason=FailureKind.START,
            )
        connection = await self._connection(url)
        content, content_type = _payload(request.get("body"))
        headers: dict[str, Any] = {
            k: with_env(str(v), task.step.env) for k, v in (request.get("headers") or {}).items()
        }
        routing_key = str(request["routing_key"])
        correlation = uuid.uuid4().hex
        async with connection.channel() as channel:
            exchange = (
                await channel.get_exchange(request["exchange"], ensure=False)
                if request.get("exchange")
                else channel.default_exchange
            )
            replies: asyncio.Future[AbstractIncomingMessage] = (
                asyncio.get_running_loop().create_future()
            )
            if request.get("reply", True):
                reply_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)

                async def on_reply(message: AbstractIncomingMessage) -> None:
                    if message.correlation_id == correlation and not replies.done():
                        replies.set_result(message)

                await reply_queue.consume(on_reply, no_ack=True)
            message = aio_pika.Message(
                content,
                content_type=content_type,
                headers=headers or None,
                correlation_id=correlation,
                message_id=f"{task.run_id}/{task.task}/{task.index}/{task.attempt}",
                reply_to="amq.rabbitmq.reply-to" if request.get("reply", True) else None,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            emit("system", f"publish to {request.get('exchange') or '(default)'} {routing_key}")
            await exchange.publish(message, routing_key=routing_key)
            if not request.get("reply", True):
                return StepOutcome(ok=True, result=None)
            try:
                reply = await asyncio.wait_for(replies, float(request.get("wait", 30.0)))
            except TimeoutError:
                return _failed(
                    f"no reply from {routing_key} within {request.get('wait')}s",
                    retryable=True,
                    reason=FailureKind.TIMEOUT,
                )
        text = reply.body.decode("utf-8", errors="replace")
        emit("system", f"reply ({len(reply.body):,} bytes)")
        return StepOutcome(ok=True, result=parse_result(text))
