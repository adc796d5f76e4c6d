"""API tokens: bearer tokens with scopes, stored hashed, revocable.

A token reads ``cvy_<id>_<secret>``; the store keeps only the SHA-256 of the secret.
Scopes are ordered: ``read`` sees runs and workflows, ``run`` also starts and steers
them, ``admin`` also fires triggers by hand and manages workflows.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum

import msgspec

from contracts.errors import InvalidInput, NotFound, Problem
from contracts.ports import TriggerStore

TOKENS_KEY = "api-tokens"


class Scope(IntEnum):
    READ = 1
    RUN = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise InvalidInput(
                [Problem(f"unknown scope {text!r} (read, run, admin)")], source="--scope"
            ) from None


class StoredToken(msgspec.Struct, kw_only=True):
    id: str
    name: str
    scope: str
    digest: str
    created: float
    revoked: float | None = None


_decode = msgspec.json.Decoder(list[StoredToken]).decode


@dataclass(frozen=True)
class Caller:
    name: str
    scope: Scope


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    def __init__(self, store: TriggerStore) -> None:
        self._store = store

    async def all(self) -> list[StoredToken]:
        raw = await self._store.cursor(TOKENS_KEY)
        return _decode(raw) if raw else []

    async def any_active(self) -> bool:
        return any(t.revoked is None for t in await self.all())

    async def create(self, name: str, scope: Scope) -> str:
        """A new token; the only time its secret is seen."""
        token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(24)
        found = await self.all()
        found.append(
            StoredToken(
                id=token_id,
                name=name,
                scope=scope.name.lower(),
                digest=_digest(secret),
                created=time.time(),
            )
        )
        await self._store.set_cursor(TOKENS_KEY, msgspec.json.encode(found))
        return f"cvy_{token_id}_{secret}"

    async def revoke(self, token_id: str) -> None:
        found = await self.all()
        for token in found:
            if token.id == token_id and token.revoked is None:
                token.revoked = time.time()
                await self._store.set_cursor(TOKENS_KEY, msgspec.json.encode(found))
                return
        raise NotFound(f"no active token {token_id!r}")

    async def check(self, presented: str) -> Caller | None:
        """The caller a presented token names, or None (unknown, malformed, revoked)."""
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != "cvy":
            return None
        token_id, secret = parts[1], parts[2]
        digest = _digest(secret)
        for token in await self.all():
            if token.id == token_id and hmac.compare_digest(token.digest, digest):
                if token.revoked is not None:
                    return None
                return Caller(token.name, Scope[token.scope.upper()])
        return None
