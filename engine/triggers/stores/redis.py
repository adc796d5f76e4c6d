"""The distributed trigger store on Redis, shared by every server replica.

Admission is one Lua script (``SET NX`` of the key with its expiry, then the inbox
entry), so a delivery is either a duplicate or in the inbox, never neither. Keys share
one hash tag, so the store works on Redis Cluster too.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import msgspec

from contracts.errors import NotFound
from contracts.ports import TriggerRecord
from engine.redis_client import redis_client
from engine.redis_retry import outage_is_retryable
from engine.triggers.stores import RECORDS_KEPT

PREFIX = "conveyor:{triggers}"

_ADMIT = """
local kept = redis.call('GET', KEYS[1])
if kept and tonumber(kept) > tonumber(ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return 1
"""

_REGISTER = """
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known then return tonumber(known) end
local version = redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], version)
redis.call('HSET', KEYS[3], ARGV[3], version)
return version
"""

_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(TriggerRecord).decode


def _key(*parts: str) -> str:
    return ":".join((PREFIX, *parts))


class RedisTriggerStore:
    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self._redis: Any = redis_client(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10
        )
        self._clock = clock
        self._admit = self._redis.register_script(_ADMIT)
        self._register = self._redis.register_script(_REGISTER)

    @outage_is_retryable
    async def register(self, name: str, document: bytes) -> int:
        digest = hashlib.sha256(document).hexdigest()
        keys = [_key("wf", name, "by-digest"), _key("wf", name, "docs"), _key("workflows")]
        return int(await self._register(keys=keys, args=[digest, document, name]))

    @outage_is_retryable
    async def workflow(self, name: str, version: int | None = None) -> tuple[int, bytes]:
        docs = _key("wf", name, "docs")
        number = version if version is not None else int(await self._redis.llen(docs))
        document = await self._redis.lindex(docs, number - 1) if number >= 1 else None
        if document is None:
            raise NotFound(f"no workflow {name!r}" + (f" version {version}" if version else ""))
        return number, bytes(document)

    @outage_is_retryable
    async def workflows(self) -> dict[str, int]:
        raw = await self._redis.hgetall(_key("workflows"))
        return {name.decode(): int(version) for name, version in raw.items()}

    @outage_is_retryable
    async def admit(self, key: str, payload: bytes, *, keep: float) -> bool:
        keys = [_key("seen", key), _key("inbox"), _key("inbox-at")]
        now = self._clock()
        # The expiry is the store's clock's (``until``); Redis's own TTL only cleans up.
        args: list[Any] = [max(1, int(keep * 1000)), key, payload, now, now + keep]
        return bool(await self._admit(keys=keys, args=args))

    @outage_is_retryable
    async def pending(self, *, older_than: float = 0.0) -> list[tuple[str, bytes]]:
        cutoff = self._clock() - older_than
        keys = await self._redis.zrangebyscore(_key("inbox-at"), "-inf", cutoff)
        if not keys:
            return []
        payloads = await self._redis.hmget(_key("inbox"), keys)
        return [
            (key.decode(), bytes(payload))
            for key, payload in zip(keys, payloads, strict=True)
            if payload is not None
        ]

    @outage_is_retryable
    async def settle(self, key: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(_key("inbox"), key)
            pipe.zrem(_key("inbox-at"), key)
            await pipe.execute()

    @outage_is_retryable
    async def record(self, record: TriggerRecord) -> None:
        body = _encode(record)
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in (
                _key("records", record.workflow),
                _key("records", record.workflow, record.trigger),
            ):
                pipe.lpush(key, body)
                pipe.ltrim(key, 0, RECORDS_KEPT - 1)
            await pipe.execute()

    @outage_is_retryable
    async def records(
        self, workflow: str, trigger: str | None = None, *, limit: int = 100
    ) -> list[TriggerRecord]:
        key = _key("records", workflow) if trigger is None else _key("records", workflow, trigger)
        return [_decode_record(body) for body in await self._redis.lrange(key, 0, limit - 1)]

    @outage_is_retryable
    async def cursor(self, key: str) -> bytes | None:
        value = await self._redis.get(_key("cursor", key))
        return None if value is None else bytes(value)

    @outage_is_retryable
    async def set_cursor(self, key: str, value: bytes) -> None:
        await self._redis.set(_key("cursor", key), value)

    async def close(self) -> None:
        await self._redis.aclose()
