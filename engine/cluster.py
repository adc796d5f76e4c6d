"""Building the distributed engine's parts from settings (the composition root's helpers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from contracts.errors import ConveyorError, InvalidInput, Problem
from contracts.events import Event
from contracts.ports import RunStore
from engine.coordinator import Coordinator
from engine.runlog.redis import RedisRunLog
from engine.runlog.sqlite import SqliteRunLog
from engine.settings import Settings
from engine.state import fold, new_state
from engine.state.model import RunState
from engine.timers import RedisTimers
from engine.transport.rabbitmq import RabbitTransport
from workers.artifacts import FsspecArtifactStore
from workers.worker import Worker


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


def open_store(settings: Settings) -> RunStore:
    if settings.redis_url:
        return RedisRunLog(settings.redis_url)
    return SqliteRunLog(settings.home / "conveyor.db")


@asynccontextmanager
async def transport(settings: Settings) -> AsyncIterator[RabbitTransport]:
    require(settings, "amqp_url")
    assert settings.amqp_url
    t = RabbitTransport(settings.amqp_url, heartbeat=settings.amqp_heartbeat)
    await t.start()
    try:
        yield t
    finally:
        await t.close()


def open_artifacts(settings: Settings) -> FsspecArtifactStore:
    return FsspecArtifactStore(settings.artifact_store_url(), max_bytes=settings.artifact_max_bytes)


def build_coordinator(settings: Settings, t: RabbitTransport, store: RunStore) -> Coordinator:
    require(settings, "redis_url")
    assert settings.redis_url
    url = settings.redis_url
    coordinator = Coordinator(
        t,
        store,
        shards=settings.shards,
        timers=lambda fire: RedisTimers(url, fire, time.time),
        heartbeat_timeout=settings.heartbeat_timeout,
        wake_interval=settings.wake_interval,
        artifacts=open_artifacts(settings),
        dispatch_batch=settings.dispatch_batch,
    )
    t.on_reconnect(coordinator.forget_all)
    return coordinator


def build_worker(
    settings: Settings, t: RabbitTransport, store: RunStore, pool: str, concurrency: int
) -> Worker:
    return Worker(
        t,
        store,
        pool=pool,
        concurrency=concurrency,
        heartbeat_interval=settings.heartbeat_interval,
        artifacts=open_artifacts(settings),
    )


async def watch_run(
    store: RunStore,
    run_id: str,
    observer: Callable[[Event, RunState], None] | None = None,
    *,
    poll: float = 0.2,
    timeout: float | None = None,
) -> RunState:
    """Follow a run's log until it finishes, folding events as they appear."""
    deadline = None if timeout is None else time.monotonic() + timeout
    state: RunState | None = None
    seen = 0
    while True:
        try:
            events = await store.read(run_id)
        except ConveyorError:
            events = []
        for event in events[seen:]:
            if state is None:
                state = new_state(event)  # type: ignore[arg-type]
            else:
                fold(state, event)
            if observer is not None:
                observer(event, state)
        seen = len(events)
        if state is not None and state.finished:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise ConveyorError(f"run {run_id} did not finish in {timeout}s")
        await asyncio.sleep(poll)
