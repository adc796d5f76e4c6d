"""Composing a server: the embedded engine in this process when no broker is configured,
else a stateless front end to the distributed engine (any number of replicas)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog

from contracts.errors import InvalidInput, Problem
from contracts.ports import ArtifactStore, Transport, TriggerStore
from contracts.signing import Role
from contracts.supervision import stop_loops
from conveyor import wiring
from conveyor.local import local_engine
from conveyor.locks import ServerLock
from conveyor.metrics import RunMetrics, watch_queues
from conveyor.server.runtime import TriggerRuntime
from conveyor.server.served import ServedClient
from conveyor.server.takeup import keep_taking_up, take_up_left_unfinished
from conveyor.settings import Settings
from engine.client import Client
from engine.retention import Retention, keep_pruning
from engine.triggers.firing import STALE_AFTER

log = structlog.get_logger("conveyor.server")


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    *,
    workflows_dir: Path | None = None,
    workers: int | None = None,
    worker_grace: float | None = None,
) -> AsyncIterator[TriggerRuntime]:
    """A started trigger runtime on the home the settings name; stopped on exit (an
    embedded engine's running steps get ``worker_grace`` seconds to finish, by default
    ``conveyor.embedded.WORKER_GRACE``)."""
    store = wiring.open_trigger_store(settings)
    try:
        if wiring.distributed(settings):
            wiring.require(settings, "amqp_url", "redis_url")
            run_store = wiring.open_store(settings)
            try:
                # Its notifications hear the coordinators' state changes.
                hears = frozenset({Role.COORDINATOR})
                async with wiring.transport(settings, Role.CLIENT, hears=hears) as t:
                    client = Client(run_store, t, shards=settings.shards)
                    artifacts = wiring.open_artifacts(settings)
                    async with _runtime(
                        store, client, t, settings, workflows_dir, artifacts
                    ) as runtime:
                        yield runtime
            finally:
                await run_store.close()
            return
        # One embedded server per home: two would both take up its unfinished runs.
        with ServerLock(settings.home).held():
            async with _embedded(store, settings, workflows_dir, workers, worker_grace) as runtime:
                yield runtime
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _embedded(
    store: TriggerStore,
    settings: Settings,
    workflows_dir: Path | None,
    workers: int | None,
    worker_grace: float | None,
) -> AsyncIterator[TriggerRuntime]:
    async with local_engine(
        settings, workers=workers, worker_grace=worker_grace, listened=True
    ) as engine:
        measured = RunMetrics()
        engine.coordinator.observe(measured)
        watching = asyncio.get_running_loop().create_task(watch_queues(engine.transport, measured))
        try:
            client = ServedClient(engine.client, settings.home, engine.coordinator.drives)
            await take_up_left_unfinished(client)
            async with _runtime(
                store,
                client,
                engine.transport,
                settings,
                workflows_dir,
                engine.artifacts,
                hurry=engine.hurry,
            ) as runtime:
                # Its runs would stop moving: the server stops with it.
                engine.on_failure(runtime.supervisor.fail)
                # Once its notifier listens: run changes a process of this home stopped
                # before announcing (``notify:`` webhooks owed) go out now.
                await engine.coordinator.announcer.announce_unannounced()
                taking_up = asyncio.get_running_loop().create_task(
                    keep_taking_up(client, settings.wake_interval), name="take-up"
                )
                runtime.supervisor.watch(taking_up)
                try:
                    yield runtime
                finally:
                    await stop_loops([taking_up])
        finally:
            watching.cancel()


@contextlib.asynccontextmanager
async def _runtime(
    store: TriggerStore,
    client: Client,
    transport: Transport,
    settings: Settings,
    workflows_dir: Path | None,
    artifacts: ArtifactStore | None,
    *,
    hurry: Callable[[], None] | None = None,
) -> AsyncIterator[TriggerRuntime]:
    if workflows_dir is not None and not workflows_dir.is_dir():
        raise InvalidInput([Problem("not a folder")], source=f"--workflows {workflows_dir}")
    # One embedded server owns its inbox: what is left there is looked at soon.
    alone = not wiring.distributed(settings)
    runtime = TriggerRuntime(
        store,
        client,
        transport=transport,
        workflows_dir=workflows_dir,
        amqp_url=settings.amqp_url,
        sweep_interval=1.0 if alone else 5.0,
        stale_after=2.0 if alone else STALE_AFTER,
        artifacts=artifacts,
        hurry=hurry,
        steers_home=alone,
        listener_marks_announced=alone,
    )
    await runtime.start()
    loops = []
    if settings.retention is not None:
        rule = Retention(settings.retention)
        pruning = keep_pruning(client, rule, artifacts=artifacts)
        loops.append(asyncio.get_running_loop().create_task(pruning, name="retention"))
        runtime.supervisor.watch(loops[-1])
    try:
        yield runtime
    finally:
        await stop_loops(loops)
        await runtime.stop()
