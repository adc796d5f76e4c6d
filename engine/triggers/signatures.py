"""Is this webhook delivery really from its sender? Checked on the raw body.

The schemes senders document, each compared in constant time:

- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>``; the delivery id is
  ``X-GitHub-Delivery``.
- ``stripe``: ``Stripe-Signature: t=<unix>,v1=<hex HMAC(t + "." + body)>[,v1=...]``,
  within the timestamp tolerance.
- ``slack``: ``X-Slack-Signature: v0=<hex HMAC("v0:" + ts + ":" + body)>`` with
  ``X-Slack-Request-Timestamp``, within the tolerance.
- ``standard`` (Standard Webhooks): ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC(id + "." + ts + "." + body)> [v1,...]``; a
  ``whsec_`` secret is base64. The delivery id is ``webhook-id``.
- ``hmac``: a configurable header holding the hex HMAC-SHA256 of the body (an optional
  ``sha256=`` prefix).
- ``none``: nothing is checked (for a sender that cannot sign; say so on purpose).

Pure: the time comes in as an argument; headers are given with lower-case names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_TOLERANCE = 300.0
"""Seconds a signed timestamp may be away from now (replays older than this fail)."""


class Preset(StrEnum):
    GITHUB = "github"
    STRIPE = "stripe"
    SLACK = "slack"
    STANDARD = "standard"
    HMAC = "hmac"
    NONE = "none"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    """Why a delivery was refused (never the secret or the expected signature)."""
    delivery_id: str | None = None
    """The sender's id of this delivery, where its scheme has one (for deduplication)."""


def verify(
    preset: Preset,
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
    hmac_header: str = "x-signature",
) -> Verdict:
    """Whether ``body`` with ``headers`` was signed with ``secret`` the ``preset`` way."""
    if preset == Preset.NONE:
        return Verdict(True)
    if not secret:
        return Verdict(False, "no secret is configured for this trigger")
    check = _CHECKS[preset]
    return check(secret, headers, body, now, tolerance, hmac_header)


def _hex(secret: bytes, data: bytes) -> str:
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _fresh(stamp: str, now: float, tolerance: float) -> str | None:
    """Why a signed timestamp is not acceptable, or None."""
    try:
        at = float(stamp)
    except ValueError:
        return "the signed timestamp is not a number"
    if abs(now - at) > tolerance:
        return f"the signed timestamp is {abs(now - at):.0f}s away (tolerance {tolerance:g}s)"
    return None


def _github(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float, tol: float, _h: str
) -> Verdict:
    given = headers.get("x-hub-signature-256", "")
    if not given.startswith("sha256="):
        return Verdict(False, "missing X-Hub-Signature-256")
    if not _same(given[len("sha256=") :], _hex(secret, body)):
        return Verdict(False, "signature does not match")
    return Verdict(True, delivery_id=headers.get("x-github-delivery"))


def _stripe(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float, tol: float, _h: str
) -> Verdict:
    parts = [p.split("=", 1) for p in headers.get("stripe-signature", "").split(",") if "=" in p]
    stamps = [v for k, v in parts if k.strip() == "t"]
    signatures = [v for k, v in parts if k.strip() == "v1"]
    if not stamps or not signatures:
        return Verdict(False, "missing or malformed Stripe-Signature")
    stale = _fresh(stamps[0], now, tol)
    if stale:
        return Verdict(False, stale)
    expected = _hex(secret, stamps[0].encode() + b"." + body)
    if not any(_same(s, expected) for s in signatures):
        return Verdict(False, "signature does not match")
    return Verdict(True)


def _slack(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float, tol: float, _h: str
) -> Verdict:
    stamp = headers.get("x-slack-request-timestamp", "")
    given = headers.get("x-slack-signature", "")
    if not stamp or not given.startswith("v0="):
        return Verdict(False, "missing X-Slack-Signature or X-Slack-Request-Timestamp")
    stale = _fresh(stamp, now, tol)
    if stale:
        return Verdict(False, stale)
    if not _same(given[3:], _hex(secret, b"v0:" + stamp.encode() + b":" + body)):
        return Verdict(False, "signature does not match")
    return Verdict(True)


def _standard(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float, tol: float, _h: str
) -> Verdict:
    delivery = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not delivery or not stamp or not signatures:
        return Verdict(False, "missing webhook-id, webhook-timestamp or webhook-signature")
    stale = _fresh(stamp, now, tol)
    if stale:
        return Verdict(False, stale)
    try:
        expected = standard_signature(secret, delivery, stamp, body)
    except binascii.Error:
        return Verdict(False, "the configured whsec_ secret is not base64")
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and _same(value, expected):
            return Verdict(True, delivery_id=delivery)
    return Verdict(False, "signature does not match")


def standard_signature(secret: bytes, delivery: str, stamp: str, body: bytes) -> str:
    """The Standard Webhooks v1 signature (base64); a ``whsec_`` secret is base64 itself."""
    key = secret
    if key.startswith(b"whsec_"):
        key = base64.b64decode(key[len(b"whsec_") :], validate=True)
    signed = delivery.encode() + b"." + stamp.encode() + b"." + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def standard_headers(secret: bytes, delivery: str, now: float, body: bytes) -> dict[str, str]:
    """Headers that sign an outgoing webhook the Standard Webhooks way."""
    stamp = str(int(now))
    return {
        "webhook-id": delivery,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + standard_signature(secret, delivery, stamp, body),
    }


def _generic(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float, tol: float, name: str
) -> Verdict:
    given = headers.get(name.lower(), "")
    if not given:
        return Verdict(False, f"missing {name}")
    given = given.removeprefix("sha256=")
    if not _same(given, _hex(secret, body)):
        return Verdict(False, "signature does not match")
    return Verdict(True)


_CHECKS = {
    Preset.GITHUB: _github,
    Preset.STRIPE: _stripe,
    Preset.SLACK: _slack,
    Preset.STANDARD: _standard,
    Preset.HMAC: _generic,
}
