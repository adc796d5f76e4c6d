"""Message signatures: what opens, what does not, and how keys rotate."""

from __future__ import annotations

import pytest

from contracts.errors import InvalidInput
from contracts.signing import KeyRing, Role, SignatureError

KEYS = KeyRing.parse(
    "coordinator:k2:coordinator-secret-2,coordinator:k1:coordinator-secret-1,"
    "worker:w1:worker-secret-000000,client:c1:client-secret-000000"
)
ALL = frozenset(Role)


def test_a_signed_message_opens_for_an_accepted_role() -> None:
    signed = KEYS.sign(Role.WORKER, b'{"type":"task_started"}')
    assert KEYS.open(signed, ALL) == (Role.WORKER, b'{"type":"task_started"}')
    with pytest.raises(SignatureError, match="a worker may not send here"):
        KEYS.open(signed, {Role.COORDINATOR})


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"task_started", b"task_succeeded"),  # body changed
        lambda m: m.replace(b"worker w1", b"coordinator k2"),  # claims another role
        lambda m: m.split(b"\n", 1)[1],  # signature stripped
        lambda m: m[:-3] + b"xyz",
        lambda m: b"cvsig1 worker\n" + m,
    ],
    ids=["body", "role", "unsigned", "truncated", "malformed"],
)
def test_anything_changed_or_unsigned_does_not_open(tamper: object) -> None:
    signed = KEYS.sign(Role.WORKER, b'{"type":"task_started"}')
    with pytest.raises(SignatureError):
        KEYS.open(tamper(signed), ALL)  # type: ignore[operator]


def test_a_stranger_s_key_does_not_open() -> None:
    stranger = KeyRing.parse("worker:w1:not-the-same-secret-at-all")
    with pytest.raises(SignatureError, match="bad signature"):
        KEYS.open(stranger.sign(Role.WORKER, b"x"), ALL)


def test_keys_rotate_the_first_signs_and_all_verify() -> None:
    old = KeyRing.parse("coordinator:k1:coordinator-secret-1")
    assert KEYS.open(old.sign(Role.COORDINATOR, b"x"), ALL) == (Role.COORDINATOR, b"x")
    assert b" k2 " in KEYS.sign(Role.COORDINATOR, b"x")


def test_bad_key_settings_are_refused() -> None:
    with pytest.raises(InvalidInput, match="CONVEYOR_SIGNING_KEYS"):
        KeyRing.parse("admin:a:secret-secret-secret")
    with pytest.raises(InvalidInput, match="16 characters or more"):
        KeyRing.parse("worker:w1:short")
