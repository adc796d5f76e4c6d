"""Steps that call another service, run by a worker without spawning a process:

- ``http``: one HTTP request; the result is the parsed response;
- ``amqp``: a message published to RabbitMQ and, unless ``reply: false``, the
  correlated reply waited for (request/reply); the result is the parsed reply.

Every field may hold templates. ``${NAME}`` in a URL or header value is taken from the
step's ``env`` (so a secret parameter reaches a header the way it reaches a script).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from contracts.durations import Duration
from contracts.modelbase import EnvName, Model

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
MAX_RESPONSE_BYTES = 1 << 20


class HttpCall(Model):
    url: str = Field(min_length=1, description="http(s) URL (templated).")
    method: HttpMethod = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(default=None, description="JSON for a dict or list, else text.")
    expect: list[int] | None = Field(
        default=None, description="Statuses that count as success (default: any 2xx)."
    )
    max_bytes: int = Field(default=MAX_RESPONSE_BYTES, gt=0, le=64 << 20)


class AmqpCall(Model):
    url_env: EnvName = Field(
        default="CONVEYOR_AMQP_URL", description="Worker environment variable with the broker URL."
    )
    exchange: str = Field(default="", max_length=255)
    routing_key: str = Field(min_length=1, max_length=255)
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    reply: bool = Field(default=True, description="Wait for the correlated reply.")
    wait: Duration = Field(default=30.0, description="Longest wait for the reply.")


CallKind = Literal["http", "amqp"]
