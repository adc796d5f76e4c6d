"""Building the distributed engine's parts from settings (the composition root's helpers).

Each backend is imported once the settings choose it: the Redis client, the broker's
client (with the signing wrapper) and the engine's processes with their clients take
0.3 to 0.5 s to import, and a command that reads runs in a local home uses none of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog

from contracts.errors import InvalidInput, Problem
from contracts.ports import RunStore, TriggerStore
from contracts.signing import KeyRing, Role
from conveyor.settings import Settings
from engine.client import Client
from engine.runlog.sqlite import SqliteRunLog
from engine.triggers.stores.sqlite import SqliteTriggerStore
from workers.artifacts import FsspecArtifactStore, backend_problem

if TYPE_CHECKING:
    from conveyor.signing import SigningTransport
    from engine.coordinator import Coordinator
    from engine.transport.rabbitmq import RabbitTransport
    from workers.worker import Worker

    DistributedTransport = RabbitTransport | SigningTransport

log = structlog.get_logger("conveyor.wiring")


def require(settings: Settings, *names: str) -> None:
    missing = [name for name in names if not getattr(settings, name)]
    if missing:
        raise InvalidInput(
            [
                Problem(f"set CONVEYOR_{name.upper()} (or --{name.replace('_', '-')})")
                for name in missing
            ],
            source="configuration",
        )


def runs_in_home(settings: Settings) -> bool:
    """Whether runs are kept in the local home (its SQLite file), not in Redis: then only
    the home's own processes drive them, and its locks say which."""
    return not settings.redis_url


def distributed(settings: Settings) -> bool:
    """Whether the settings name the distributed engine's services (a server then serves
    them rather than the local home)."""
    return bool(settings.amqp_url or settings.redis_url)


def open_store(settings: Settings) -> RunStore:
    if not runs_in_home(settings):
        assert settings.redis_url
        from engine.runlog.redis import RedisRunLog  # the client takes 0.1 to 0.3 s

        return RedisRunLog(settings.redis_url)
    return SqliteRunLog(settings.home / "conveyor.db")


def open_trigger_store(settings: Settings) -> TriggerStore:
    """Where the triggers, their firings and the server's tokens are kept: beside the runs."""
    if not runs_in_home(settings):
        assert settings.redis_url
        from engine.triggers.stores.redis import RedisTriggerStore

        return RedisTriggerStore(settings.redis_url)
    return SqliteTriggerStore(settings.home / "conveyor.db")


@asynccontextmanager
async def transport(
    settings: Settings,
    role: Role = Role.CLIENT,
    *,
    connect_within: float | None = None,
    hears: frozenset[Role] = frozenset(),
) -> AsyncIterator[DistributedTransport]:
    """The broker, as ``role``: with signing keys configured, every message this process
    sends is signed and only messages it may receive are opened (``conveyor.signing``).
    ``connect_within``: see ``RabbitTransport`` (a command gives up, a service waits).
    ``hears``: roles whose messages this process takes besides its role's own."""
    require(settings, "amqp_url")
    assert settings.amqp_url
    from conveyor.signing import SigningTransport
    from engine.transport.rabbitmq import RabbitTransport

    keys = signing_keys(settings, role, hears)
    # A frozen process holds the messages delivered to it (and not yet acked) until the
    # broker misses two AMQP heartbeats: keep that within the attempts' lease, so every
    # task a frozen worker held runs elsewhere within the lease time.
    heartbeat = min(settings.amqp_heartbeat, settings.heartbeat_timeout / 3)
    t = RabbitTransport(
        settings.amqp_url,
        heartbeat=heartbeat,
        queue_type=settings.queue_type,
        delivery_limit=settings.delivery_limit,
        connect_within=connect_within,
    )
    wrapped: DistributedTransport = t
    if keys is not None:
        accept = frozenset(Role) if role == Role.COORDINATOR else frozenset({Role.COORDINATOR})
        wrapped = SigningTransport(t, keys, role, accept)
    await wrapped.start()
    try:
        yield wrapped
    finally:
        await wrapped.close()


def signing_keys(
    settings: Settings, role: Role, hears: frozenset[Role] = frozenset()
) -> KeyRing | None:
    if not settings.signing_keys:
        if role == Role.CLIENT:
            return None
        log.warning(
            "messages on the broker are not authenticated: anyone who can publish to it can"
            " run steps (set CONVEYOR_SIGNING_KEYS; docs/security.md)"
        )
        return None
    keys = KeyRing.parse(settings.signing_keys)
    problems = []
    if role not in keys.signers():
        having = " (only a public key)" if role in keys.roles() else ""
        problems.append(Problem(f"no key to sign as the {role} role{having}"))
    for checked in sorted((CHECKS[role] | hears) - keys.roles()):
        problems.append(Problem(f"no key to check the {checked} role's messages with"))
    if problems:
        raise InvalidInput(problems, source="CONVEYOR_SIGNING_KEYS")
    return keys


CHECKS: Mapping[Role, frozenset[Role]] = {
    Role.COORDINATOR: frozenset(Role),
    Role.WORKER: frozenset({Role.COORDINATOR}),
    # A command sends only; a server also hears the coordinators' state changes.
    Role.CLIENT: frozenset(),
}
"""The roles whose messages a process of each role must be able to check at start."""


@asynccontextmanager
async def open_client(settings: Settings, *, steer: bool = False) -> AsyncIterator[Client]:
    """A client on the home ``settings`` name: Redis (and RabbitMQ) when configured, else
    the local file. With ``steer`` it can also send commands, which needs the broker."""
    if steer:
        require(settings, "amqp_url", "redis_url")
    store = open_store(settings)
    try:
        if not steer:
            yield Client(store, shards=settings.shards)
            return
        async with transport(settings, connect_within=settings.connect_within) as t:
            yield Client(store, t, shards=settings.shards)
    finally:
        await store.close()


def open_artifacts(settings: Settings) -> FsspecArtifactStore:
    """The artifact store the settings name; a URL no installed filesystem serves is
    invalid input, said before anything starts."""
    url = settings.artifact_store_url()
    problem = backend_problem(url)
    if problem is not None:
        raise InvalidInput([Problem(f"{url}: {problem}")], source="CONVEYOR_ARTIFACTS_URL")
    roots = [root for root in settings.artifact_roots.split(os.pathsep) if root]
    return FsspecArtifactStore(url, max_bytes=settings.artifact_max_bytes, readable_roots=roots)


def build_coordinator(settings: Settings, t: DistributedTransport, store: RunStore) -> Coordinator:
    require(settings, "redis_url")
    assert settings.redis_url
    url = settings.redis_url
    from engine.coordinator import Coordinator
    from engine.redis_timers import RedisTimers

    coordinator = Coordinator(
        t,
        store,
        shards=settings.shards,
        shard_watch_interval=settings.shard_watch_interval,
        timers=lambda fire: RedisTimers(url, fire, time.time),
        heartbeat_timeout=settings.heartbeat_timeout,
        wake_interval=settings.wake_interval,
        artifacts=open_artifacts(settings),
        dispatch_batch=settings.dispatch_batch,
        announce=settings.announce,
    )
    t.on_reconnect(coordinator.forget_all)
    return coordinator


def build_worker(
    settings: Settings, t: DistributedTransport, store: RunStore, pool: str, concurrency: int
) -> Worker:
    from workers.worker import Worker

    return Worker(
        t,
        store,
        pool=pool,
        concurrency=concurrency,
        heartbeat_interval=settings.heartbeat_interval,
        artifacts=open_artifacts(settings),
        max_result_bytes=settings.max_result_bytes,
    )
