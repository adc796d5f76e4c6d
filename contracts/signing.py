"""Authenticating messages on the broker: who sent this, and may it send that?

Anyone who can publish to the broker could otherwise run steps on workers (a forged
task message) or rewrite results (a forged outcome). So every message carries a tag
made with a key of its sender's role, and a receiver opens only what a role it expects
signed, with a key it knows; the coordinator then accepts from each role only the
kinds that role sends.

A signed message is ``cvsig1 <role> <key id> <hex tag>\\n<body>``. Each role may have
several keys: the first that can sign signs, all verify, so keys rotate by adding the
new one first and removing the old one later. Configuration
(``CONVEYOR_SIGNING_KEYS``), comma-separated ``role:key-id:KEY`` where KEY is

- a shared secret (16 characters or more; HMAC-SHA256): whoever checks with it can
  also sign with it;
- ``ed25519-private:BASE64`` (signs and checks) or ``ed25519-public:BASE64`` (checks
  only), the two halves of an Ed25519 key pair: workers hold only the public half of
  the coordinator's key, so a worker's host cannot pass for a coordinator.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from contracts.errors import ConveyorError, InvalidInput, Problem

SIGNER_HEADER = "conveyor-signer"
"""Set by the receiving side on a message it opened: the role that signed it."""
SIGNATURE_HEADER = "conveyor-signature"
"""Where a message whose body others read as it is (a state change) carries its
signature line."""
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


ED25519_PRIVATE = "ed25519-private:"
ED25519_PUBLIC = "ed25519-public:"


class Key(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def signs(self) -> bool:
        """Whether this process can sign with it, not only check."""
        ...

    def tag(self, role: Role, body: bytes) -> bytes: ...

    def checks(self, role: Role, body: bytes, tag: bytes) -> bool: ...


@dataclass(frozen=True)
class SharedKey:
    """A secret every holder signs and checks with (HMAC-SHA256)."""

    id: str
    secret: bytes
    signs: bool = True

    def tag(self, role: Role, body: bytes) -> bytes:
        mac = hmac.new(self.secret, digestmod=hashlib.sha256)
        mac.update(_signed_prefix(role, self.id))
        mac.update(body)
        return mac.hexdigest().encode()

    def checks(self, role: Role, body: bytes, tag: bytes) -> bool:
        return hmac.compare_digest(self.tag(role, body), tag)


class PairKey:
    """An Ed25519 key: its private half signs, its public half checks, and the public
    half alone cannot sign."""

    def __init__(self, key_id: str, raw: bytes, *, private: bool) -> None:
        # Imported with the first such key: most processes never load it.
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self._refused = (InvalidSignature, ValueError)

        self.id = key_id
        self._private = ed25519.Ed25519PrivateKey.from_private_bytes(raw) if private else None
        self._public = (
            self._private.public_key()
            if self._private is not None
            else ed25519.Ed25519PublicKey.from_public_bytes(raw)
        )

    @property
    def signs(self) -> bool:
        return self._private is not None

    def tag(self, role: Role, body: bytes) -> bytes:
        if self._private is None:
            raise SignatureError(f"key {self.id!r} is a public key: it checks, it cannot sign")
        return self._private.sign(_signed_prefix(role, self.id) + body).hex().encode()

    def checks(self, role: Role, body: bytes, tag: bytes) -> bool:
        try:
            self._public.verify(
                bytes.fromhex(tag.decode("ascii")), _signed_prefix(role, self.id) + body
            )
        except self._refused:
            return False
        return True


class KeyRing:
    def __init__(self, keys: Mapping[Role, Sequence[Key]]) -> None:
        self._keys = {role: list(found) for role, found in keys.items() if found}

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        keys: dict[Role, list[Key]] = {}
        problems = []
        for number, entry in enumerate((e.strip() for e in text.split(",")), start=1):
            if not entry:
                continue
            role, _, rest = entry.partition(":")
            key_id, _, secret = rest.partition(":")
            where = f"entry {number} ({role}:{key_id}:…)"
            if role not in set(Role) or not key_id:
                problems.append(
                    Problem(
                        f"{where}: expected role:key-id:KEY, role one of client, worker,"
                        " coordinator"
                    )
                )
                continue
            try:
                keys.setdefault(Role(role), []).append(_key(key_id, secret))
            except ValueError as exc:
                problems.append(Problem(f"{where}: {exc}"))
        if problems:
            raise InvalidInput(problems, source="CONVEYOR_SIGNING_KEYS")
        return cls(keys)

    def roles(self) -> set[Role]:
        """The roles whose messages this ring can check."""
        return set(self._keys)

    def signers(self) -> set[Role]:
        """The roles this ring can sign as: a public key alone does not make one."""
        return {role for role, keys in self._keys.items() if any(k.signs for k in keys)}

    def signature(self, role: Role, body: bytes) -> bytes:
        """The line that signs ``body`` as ``role``: what goes before it in a signed
        message, or in the ``conveyor-signature`` header where the body must stay as
        it is (a CloudEvent others read)."""
        key = next((k for k in self._keys.get(role, ()) if k.signs), None)
        if key is None:
            raise SignatureError(f"no key here signs as {role}")
        return b"%s%s %s %s" % (_MAGIC, role.encode(), key.id.encode(), key.tag(role, body))

    def sign(self, role: Role, body: bytes) -> bytes:
        return self.signature(role, body) + b"\n" + body

    def open(self, data: bytes, accept: Iterable[Role]) -> tuple[Role, bytes]:
        """The sender's role and the body, if a key of an accepted role signed it."""
        if not data.startswith(_MAGIC):
            raise SignatureError("message is not signed")
        line, sep, body = data.partition(b"\n")
        if not sep:
            raise SignatureError("malformed signature")
        return self.check(line, body, accept)

    def check(self, signature: bytes, body: bytes, accept: Iterable[Role]) -> tuple[Role, bytes]:
        """``open`` for a body and its signature line carried apart."""
        if not signature.startswith(_MAGIC):
            raise SignatureError("message is not signed")
        try:
            role_text, key_id, tag = signature[len(_MAGIC) :].decode("ascii").split(" ")
            role = Role(role_text)
        except ValueError:
            raise SignatureError("malformed signature") from None
        if role not in set(accept):
            raise SignatureError(f"a {role} may not send here")
        if role not in self._keys:
            raise SignatureError(f"no key here checks a {role}'s messages")
        for key in self._keys[role]:
            if key.id == key_id and key.checks(role, body, tag.encode()):
                return role, body
        raise SignatureError(f"bad signature (role {role}, key {key_id!r})")


def _key(key_id: str, text: str) -> Key:
    for prefix, private in ((ED25519_PRIVATE, True), (ED25519_PUBLIC, False)):
        if text.startswith(prefix):
            try:
                raw = base64.b64decode(text[len(prefix) :], validate=True)
            except binascii.Error:
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"an {prefix[:-1]} key is 32 bytes in base64")
            return PairKey(key_id, raw, private=private)
    if len(text) < 16:
        raise ValueError("a shared secret has 16 characters or more")
    return SharedKey(key_id, text.encode())


def _signed_prefix(role: Role, key_id: str) -> bytes:
    """What a tag covers before the body: the role and key it claims, so a tag made for
    one cannot be passed off as the other's."""
    return role.encode() + b"\0" + key_id.encode() + b"\0"
