"""A webhook delivery, from the raw request to an admitted arrival.

The order matters: the signature is checked on the raw body before anything reads it;
an accepted delivery is admitted (durably) before the sender hears 202; only then are
``when`` and ``params`` evaluated and the run started (``Firing.handle``), so a slow or
failing start never makes the sender retry, and a retry never makes a second run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from contracts.errors import ExpressionError
from contracts.expressions import Expression
from contracts.triggers import WebhookTrigger
from engine.triggers.firing import Arrival, Firing
from engine.triggers.registry import Registry, Served
from engine.triggers.signatures import Preset, verify

SecretLookup = Callable[[str], bytes | None]
"""The secret held in a named environment variable of the server (None: unset)."""


def environment_secret(name: str) -> bytes | None:
    """The secret a workflow names (``secret_env``), from this process's environment."""
    value = os.environ.get(name)
    return value.encode() if value else None


@dataclass(frozen=True)
class WebhookRequest:
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    arrival: Arrival | None = None
    """Admitted now: to be handled (after the answer is sent)."""


class WebhookIntake:
    def __init__(
        self,
        registry: Registry,
        firing: Firing,
        secrets: SecretLookup,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._firing = firing
        self._secrets = secrets
        self._clock = clock

    def find(self, workflow: str, trigger: str) -> Served | None:
        """The webhook trigger a path names (of the workflow's latest version)."""
        latest = self._registry.latest(workflow)
        if latest is None:
            return None
        version, spec = latest
        for candidate in spec.triggers:
            if candidate.name == trigger and candidate.webhook is not None and candidate.enabled:
                return Served(spec, version, candidate)
        return None

    async def too_large(self, served: Served, reason: str) -> Answer:
        """Record and answer a delivery refused, unread, past the trigger's ``max_bytes``
        (``reason``: by how much, as the server's body limit says)."""
        await self._firing.record(self._base(served), "rejected", reason)
        return Answer(413, {"error": "payload too large", "detail": reason})

    def _base(self, served: Served) -> Arrival:
        return Arrival(
            workflow=served.workflow.name,
            version=served.version,
            trigger=served.trigger.name,
            kind="webhook",
            key="-",
            names={},
            at=self._clock(),
        )

    async def receive(self, served: Served, request: WebhookRequest) -> Answer:
        """Check, admit and answer one delivery (the body already read within the limit)."""
        hook = served.trigger.webhook
        assert hook is not None
        now = self._clock()
        secret = self._secrets(hook.secret_env) if hook.secret_env else b""
        verdict = verify(
            Preset(hook.preset),
            secret or b"",
            request.headers,
            request.body,
            now=now,
            tolerance=hook.tolerance,
            hmac_header=hook.header.lower(),
        )
        base = self._base(served)
        if not verdict.ok:
            await self._firing.record(base, "rejected", verdict.reason)
            return Answer(401, {"error": "signature check failed", "detail": verdict.reason})
        names = _names(request)
        try:
            key = _delivery_key(hook, verdict.delivery_id, names)
        except ExpressionError as exc:
            await self._firing.record(base, "rejected", f"dedup: {exc}")
            return Answer(400, {"error": "the delivery id could not be read", "detail": str(exc)})
        arrival = Arrival(
            workflow=base.workflow,
            version=base.version,
            trigger=base.trigger,
            kind="webhook",
            key=key,
            names=names,
            at=now,
        )
        # A run id says which run this delivery starts; a signal goes to a run it names.
        named = {"signal": hook.signal} if hook.signal else {"run_id": arrival.run_id}
        if not await self._firing.admit(arrival):
            return Answer(202, {**named, "delivery": key, "status": "duplicate"})
        return Answer(202, {**named, "delivery": key, "status": "accepted"}, arrival)


def _names(request: WebhookRequest) -> dict[str, Any]:
    """What ``when``/``params``/``dedup`` read: the body as JSON (or a form), headers,
    query, and the body as text."""
    text = request.body.decode("utf-8", errors="replace")
    body: Any = None
    content_type = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" in content_type:
        body = dict(parse_qsl(text, keep_blank_values=True))
    elif text.strip():
        try:
            body = json.loads(text)
        except ValueError:
            body = None
    return {
        "body": body,
        "headers": dict(request.headers),
        "query": dict(request.query),
        "text": text,
    }


def _delivery_key(hook: WebhookTrigger, preset_id: str | None, names: dict[str, Any]) -> str:
    if hook.dedup is not None:
        value = Expression(hook.dedup).evaluate(names)
        if value is None or value == "":
            raise ExpressionError(f"{hook.dedup!r} gave no id")
        return str(value)[:200]
    if preset_id:
        return preset_id[:200]
    body = names["body"]
    if hook.preset == "stripe" and isinstance(body, dict) and isinstance(body.get("id"), str):
        return str(body["id"])[:200]  # Stripe's event id: the same on every redelivery
    # No id to go by: each delivery is its own (a resend is a new run).
    return uuid.uuid4().hex
