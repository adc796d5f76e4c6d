"""Webhook signatures, checked against the senders' own published examples and forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from engine.triggers.signatures import Preset, verify

NOW = 1_700_000_000.0


def sign_hex(secret: bytes, data: bytes) -> str:
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def test_github_s_documented_example() -> None:
    # From GitHub's "Validating webhook deliveries".
    headers = {
        "x-hub-signature-256": "sha256="
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }
    verdict = verify(
        Preset.GITHUB, b"It's a Secret to Everybody", headers, b"Hello, World!", now=NOW
    )
    assert verdict.ok and verdict.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    forged = verify(
        Preset.GITHUB, b"It's a Secret to Everybody", headers, b"Hello, World?", now=NOW
    )
    assert not forged.ok and forged.reason == "signature does not match"


def test_standard_webhooks_reference_vector() -> None:
    # The Standard Webhooks specification's own example.
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    secret = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    verdict = verify(Preset.STANDARD, secret, headers, body, now=1614265330 + 10)
    assert verdict.ok and verdict.delivery_id == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    # Rotation: any one of several signatures may match.
    rotated = {
        **headers,
        "webhook-signature": "v1,bm90LXRoaXMtb25l " + headers["webhook-signature"],
    }
    assert verify(Preset.STANDARD, secret, rotated, body, now=1614265330).ok
    stale = verify(Preset.STANDARD, secret, headers, body, now=1614265330 + 301)
    assert not stale.ok and "tolerance 300s" in stale.reason
    future = verify(Preset.STANDARD, secret, headers, body, now=1614265330 - 301)
    assert not future.ok
    assert not verify(
        Preset.STANDARD, secret, {**headers, "webhook-id": "msg_other"}, body, now=1614265330
    ).ok


def test_stripe_with_its_timestamp() -> None:
    secret, body = b"whsec_stripe_test", b'{"id": "evt_1"}'
    stamp = str(int(NOW))
    good = sign_hex(secret, stamp.encode() + b"." + body)
    header = {"stripe-signature": f"t={stamp},v1=deadbeef,v1={good}"}
    assert verify(Preset.STRIPE, secret, header, body, now=NOW + 60).ok
    assert not verify(Preset.STRIPE, secret, header, body, now=NOW + 3600).ok
    assert not verify(Preset.STRIPE, secret, header, body + b" ", now=NOW).ok
    assert not verify(Preset.STRIPE, secret, {"stripe-signature": f"v1={good}"}, body, now=NOW).ok


def test_slack_with_its_timestamp() -> None:
    secret, body = b"8f742231b10e8888abcd99yyyzzz85a5", b"token=x&team_id=T1"
    stamp = str(int(NOW))
    headers = {
        "x-slack-request-timestamp": stamp,
        "x-slack-signature": "v0=" + sign_hex(secret, b"v0:" + stamp.encode() + b":" + body),
    }
    assert verify(Preset.SLACK, secret, headers, body, now=NOW).ok
    assert not verify(Preset.SLACK, secret, headers, body, now=NOW + 301).ok
    assert not verify(Preset.SLACK, b"another-secret", headers, body, now=NOW).ok


def test_generic_hmac_with_a_configured_header() -> None:
    secret, body = b"shared", b"payload"
    header = {"x-my-signature": "sha256=" + sign_hex(secret, body)}
    assert verify(Preset.HMAC, secret, header, body, now=NOW, hmac_header="X-My-Signature").ok
    assert not verify(Preset.HMAC, secret, header, body, now=NOW).ok  # another header


@pytest.mark.parametrize("preset", [p for p in Preset if p != Preset.NONE])
def test_unsigned_or_unkeyed_deliveries_are_refused(preset: Preset) -> None:
    assert not verify(preset, b"secret", {}, b"body", now=NOW).ok
    refused = verify(preset, b"", {}, b"body", now=NOW)
    assert not refused.ok and refused.reason == "no secret is configured for this trigger"


def test_the_reason_never_tells_the_expected_signature() -> None:
    secret, body = b"s", b"b"
    expected = sign_hex(secret, body)
    verdict = verify(Preset.GITHUB, secret, {"x-hub-signature-256": "sha256=00"}, body, now=NOW)
    assert expected not in verdict.reason
    assert base64.b64encode(bytes.fromhex(expected)).decode() not in verdict.reason
