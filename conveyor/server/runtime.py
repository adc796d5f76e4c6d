"""The trigger runtime of one server process: registered workflows, webhooks, schedules,
sensors and queue sources, and the sweep that finishes what a dead process admitted.

Every replica runs all of it. What could happen twice (two replicas ticking the same
schedule, a sensor seeing the same object, a redelivered message) is admitted once
per key by the trigger store and starts the run its key names, so it happens once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from contracts.errors import ConveyorError, InvalidInput
from contracts.ports import ArtifactStore, Transport, TriggerStore
from contracts.supervision import Supervisor, stop_loops
from conveyor.metrics import count_decision
from conveyor.server.folder import WorkflowFolder
from engine.client import Client
from engine.triggers.firing import STALE_AFTER, STEER_KIND, Arrival, Firing
from engine.triggers.notify import FIRST_DELAY, Notifier
from engine.triggers.queues import QueueSources
from engine.triggers.registry import Registry
from engine.triggers.scheduler import Scheduler
from engine.triggers.sensors import Sensors
from engine.triggers.webhooks import WebhookIntake, environment_secret

log = structlog.get_logger("conveyor.server")


class TriggerRuntime:
    def __init__(
        self,
        store: TriggerStore,
        client: Client,
        *,
        transport: Transport | None = None,
        workflows_dir: Path | None = None,
        amqp_url: str | None = None,
        refresh_interval: float = 1.0,
        sweep_interval: float = 5.0,
        stale_after: float = STALE_AFTER,
        notify_retry_delay: float = FIRST_DELAY,
        artifacts: ArtifactStore | None = None,
        clock: Callable[[], float] = time.time,
        hurry: Callable[[], None] | None = None,
        steers_home: bool = False,
        listener_marks_announced: bool = False,
    ) -> None:
        """``hurry``: what ends the grace period of a stop that waits for running steps
        (an embedded engine's, whose steps run in this process). ``steers_home``: the
        cancels, retries and resumes the command line queues for an embedded server are
        taken at the next sweep (nothing here handles them as they arrive).
        ``listener_marks_announced``: the engine's coordinator leaves marking run changes
        announced to the notifier (``EmbeddedEngine``'s flag of the same name)."""
        self.store = store
        self.hurry = hurry
        self.stopping = asyncio.Event()
        """Set when the server begins to stop: its open event and log streams end."""
        self.client = client
        self.transport = transport
        self.artifacts = artifacts
        """Where the runs' artifacts are, for the API's downloads."""
        self.registry = Registry(store)
        self.firing = Firing(store, client, clock=clock, registry=self.registry)
        self.firing.on_decision.append(count_decision)
        self.webhooks = WebhookIntake(self.registry, self.firing, environment_secret, clock=clock)
        self.scheduler = Scheduler(self.registry, self.firing, clock=clock)
        self.sensors = Sensors(self.registry, self.firing, clock=clock)
        self.queues = QueueSources(self.registry, self.firing, default_url=amqp_url)
        self.notifier = (
            Notifier(
                transport,
                client,
                store,
                environment_secret,
                clock=clock,
                first_delay=notify_retry_delay,
                marks_handled=listener_marks_announced,
            )
            if transport is not None
            else None
        )
        self.folder = WorkflowFolder(workflows_dir, self.registry) if workflows_dir else None
        self._refresh_interval = refresh_interval
        self._sweep_interval = sweep_interval
        self._stale_after = stale_after
        self._steers_home = steers_home
        self._loops: list[asyncio.Task[None]] = []
        self._handling: set[asyncio.Task[object]] = set()
        self.supervisor = Supervisor("server")
        """Fails when a loop of the triggers (refresh, sweep, scheduler) ends, or when
        something else this server cannot work without reports to it (its engine)."""

    async def start(self) -> None:
        if self.folder is not None:
            await self.folder.load()
        await self.registry.refresh()
        await self._apply_registry()
        if self.notifier is not None:
            await self.notifier.start()
        self._loops = [
            self._every(self._refresh_interval, self._refresh, "refresh"),
            self._every(self._sweep_interval, self._sweep, "sweep"),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
        ]
        for loop in self._loops:
            self.supervisor.watch(loop)
        log.info("trigger runtime started", workflows=self.registry.names())

    async def stop(self) -> None:
        self.stopping.set()
        self.supervisor.stopping = True
        await stop_loops(self._loops)
        await self.sensors.stop()
        await self.queues.stop()
        if self.notifier is not None:
            await self.notifier.stop()
        if self._handling:
            await asyncio.wait(self._handling, timeout=10)

    def handle_later(self, arrival: Arrival) -> None:
        """Start the run of an admitted arrival after its sender has had its answer."""
        task = asyncio.get_running_loop().create_task(self._handle(arrival))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _handle(self, arrival: Arrival) -> None:
        try:
            await self.firing.handle(arrival)
        except ConveyorError as exc:
            # Still in the inbox: the sweep starts it when the engine answers again.
            log.warning("run not started yet", key=arrival.idempotency_key, error=str(exc))

    def trigger_problem(self, workflow: str, version: int, trigger: str) -> str | None:
        """Why this server does not serve a trigger now, if it does not: a queue source
        whose broker it cannot reach, a sensor whose last look failed."""
        key = (workflow, version, trigger)
        if (why := self.queues.not_started.get(key)) is not None:
            return f"not consuming: {why} (trying again)"
        if (why := self.sensors.failing.get(key)) is not None:
            return f"last look failed: {why} (looking again every interval)"
        return None

    async def _refresh(self) -> None:
        if self.folder is not None:
            await self.folder.load()
        if await self.registry.refresh():
            await self._apply_registry()
        elif self.queues.not_started:
            await self.queues.apply()  # a broker away until now may answer

    async def _apply_registry(self) -> None:
        self.scheduler.wake()
        await self.sensors.apply()
        await self.queues.apply()

    async def _sweep(self) -> None:
        await self.firing.sweep(self._stale_after)
        if self._steers_home:
            await self.firing.sweep(0.0, kind=STEER_KIND)

    def _every(
        self, interval: float, job: Callable[[], Awaitable[None]], name: str
    ) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await job()
                except InvalidInput as exc:
                    log.error(f"{name} failed", error=str(exc))
                except (ConveyorError, OSError) as exc:
                    log.warning(f"{name} failed; trying again", error=str(exc))

        return asyncio.create_task(loop(), name=name)

    async def sweep_now(self) -> int:
        return await self.firing.sweep(0.0)
