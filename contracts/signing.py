"""Authenticating messages on the broker: who sent this, and may it send that?

Anyone who can publish to the broker could otherwise run steps on workers (a forged
task message) or rewrite results (a forged outcome). So every message carries an HMAC
tag made with a key of its sender's role, and a receiver opens only what a role it
expects signed, with a key it knows; the coordinator then accepts from each role only
the kinds that role sends.

A signed message is ``cvsig1 <role> <key id> <hex tag>\\n<body>``. Each role may have
several keys: the first signs, all verify, so keys rotate by adding the new one first
and removing the old one later. Configuration (``CONVEYOR_SIGNING_KEYS``):
``coordinator:k1:SECRET,worker:w1:SECRET,client:c1:SECRET``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from contracts.errors import ConveyorError, InvalidInput, Problem

SIGNER_HEADER = "conveyor-signer"
"""Set by the receiving side on a message it opened: the role that signed it."""
_MAGIC = b"cvsig1 "


class Role(StrEnum):
    CLIENT = "client"
    WORKER = "worker"
    COORDINATOR = "coordinator"


SENT_BY: Mapping[Role, frozenset[str]] = {
    Role.WORKER: frozenset({"task_started", "task_succeeded", "task_failed", "heartbeat"}),
    Role.CLIENT: frozenset(
        {
            "run_submitted",
            "run_cancel_requested",
            "run_retry_requested",
            "resume_run",
            "signal_received",
        }
    ),
    # And, for workflow steps: a child run's submission and cancel, its start and end
    # told to its parent.
    Role.COORDINATOR: frozenset(
        {
            "timer_fired",
            "run_timed_out",
            "task_failed",
            "shard_wake",
            "run_submitted",
            "run_cancel_requested",
            "task_started",
            "task_succeeded",
        }
    ),
}
"""What each role may send to a coordinator shard."""


class SignatureError(ConveyorError):
    """A message that is not signed, or not by a key this process knows. Not retryable."""


@dataclass(frozen=True)
class Key:
    id: str
    secret: bytes


class KeyRing:
    def __init__(self, keys: Mapping[Role, Sequence[Key]]) -> None:
        self._keys = {role: list(found) for role, found in keys.items() if found}

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        keys: dict[Role, list[Key]] = {}
        problems = []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            role, _, rest = entry.partition(":")
            key_id, _, secret = rest.partition(":")
            if role not in set(Role) or not key_id or len(secret) < 16:
                problems.append(
                    Problem(
                        f"expected role:key-id:secret (role one of client, worker,"
                        f" coordinator; a secret of 16 characters or more), got {role}:{key_id}:…"
                    )
                )
                continue
            keys.setdefault(Role(role), []).append(Key(key_id, secret.encode()))
        if problems:
            raise InvalidInput(problems, source="CONVEYOR_SIGNING_KEYS")
        return cls(keys)

    def roles(self) -> set[Role]:
        return set(self._keys)

    def sign(self, role: Role, body: bytes) -> bytes:
        key = self._keys[role][0]
        tag = _tag(role, key, body)
        return b"%s%s %s %s\n%s" % (_MAGIC, role.encode(), key.id.encode(), tag, body)

    def open(self, data: bytes, accept: Iterable[Role]) -> tuple[Role, bytes]:
        """The sender's role and the body, if a key of an accepted role signed it."""
        if not data.startswith(_MAGIC):
            raise SignatureError("message is not signed")
        line, sep, body = data.partition(b"\n")
        try:
            role_text, key_id, tag = line[len(_MAGIC) :].decode("ascii").split(" ")
            role = Role(role_text)
        except ValueError:
            raise SignatureError("malformed signature") from None
        if not sep or role not in set(accept):
            raise SignatureError(f"a {role} may not send here")
        for key in self._keys.get(role, ()):
            if key.id == key_id and hmac.compare_digest(_tag(role, key, body), tag.encode()):
                return role, body
        raise SignatureError(f"bad signature (role {role}, key {key_id!r})")


def _tag(role: Role, key: Key, body: bytes) -> bytes:
    mac = hmac.new(key.secret, digestmod=hashlib.sha256)
    mac.update(role.encode() + b"\0" + key.id.encode() + b"\0")
    mac.update(body)
    return mac.hexdigest().encode()
