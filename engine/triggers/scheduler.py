"""Schedules that fire exactly once per nominal time, however many replicas tick them.

Each replica wakes at the next nominal time of any schedule, works out which times are
due since the schedule's shared cursor (catching up after downtime as its policy says)
and admits each as an arrival keyed by its nominal time. The trigger store admits a key
once, so one replica fires it; the run id derives from the nominal time, so even a
fire handled twice (a replica died between admitting and recording) is one run. Times
not fired (missed under ``catchup: skip``/``latest``, or skipped for an overlap) are
recorded with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import structlog

from contracts.errors import ConveyorError, NotFound
from contracts.triggers import ScheduleTrigger
from engine.triggers.firing import Arrival, Firing
from engine.triggers.registry import Registry, Served
from engine.triggers.schedule import CatchUp, Schedule, due

log = structlog.get_logger("conveyor.scheduler")

LONGEST_SLEEP = 30.0
RECORDED_MISSES = 100
"""Missed times recorded one by one after downtime; beyond that, one summary record."""


class ScheduleCursor(msgspec.Struct, kw_only=True):
    checked: float
    """Nominal times up to here have been dealt with."""
    last_run: str | None = None
    last_fire: float | None = None
    buffered: Arrival | None = None
    """``overlap: buffer_one``: the fire waiting for the previous run to finish."""


_decode_cursor = msgspec.json.Decoder(ScheduleCursor).decode


def cursor_key(workflow: str, trigger: str) -> str:
    return f"schedule:{workflow}:{trigger}"


def tick_arrival(
    served: Served, nominal: datetime, at: float, kind: str = "schedule", origin: str = ""
) -> Arrival:
    stamp = nominal.astimezone(UTC).isoformat()
    return Arrival(
        workflow=served.workflow.name,
        version=served.version,
        trigger=served.trigger.name,
        kind=kind,
        key=stamp,
        names={"nominal": stamp, "trigger": served.trigger.name},
        at=at,
        origin=origin,
    )


class Scheduler:
    def __init__(
        self, registry: Registry, firing: Firing, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._registry = registry
        self._firing = firing
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look again now (the registered schedules changed)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            nearest = LONGEST_SLEEP
            for served in self._registry.served("schedule"):
                try:
                    nearest = min(nearest, await self.tick(served))
                except ConveyorError as exc:
                    log.warning("schedule tick failed", trigger=served.trigger.name, error=str(exc))
                    nearest = min(nearest, 1.0)
            # Wake at the next nominal time, or when the registry changes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(nearest, 0.001))

    async def tick(self, served: Served) -> float:
        """Fire what is due for one schedule; seconds until its next nominal time."""
        spec = served.trigger.schedule
        assert spec is not None
        schedule = Schedule.of(spec)
        now_ts = self._clock()
        now = datetime.fromtimestamp(now_ts, UTC)
        key = cursor_key(served.workflow.name, served.trigger.name)
        raw = await self._firing.store.cursor(key)
        if raw is None:
            # A new schedule starts from now: nothing before it was registered is missed.
            cursor = ScheduleCursor(checked=now_ts)
        else:
            cursor = _decode_cursor(raw)
            await self._release_buffered(cursor)
            checked = datetime.fromtimestamp(cursor.checked, UTC)
            fires = due(
                schedule,
                checked,
                now,
                catch_up=CatchUp(spec.catchup),
                window=timedelta(seconds=spec.catchup_window),
                cap=spec.catchup_limit,
            )
            await self._record_misses(served, schedule, checked, now, fires)
            for nominal in fires:
                await self._fire(served, spec, cursor, tick_arrival(served, nominal, now_ts))
            cursor.checked = now_ts
        await self._firing.store.set_cursor(key, msgspec.json.encode(cursor))
        following = next(schedule.fires(now))
        return (following - now).total_seconds()

    async def _fire(
        self, served: Served, spec: ScheduleTrigger, cursor: ScheduleCursor, arrival: Arrival
    ) -> None:
        if not await self._firing.store.admit(
            arrival.idempotency_key, msgspec.json.encode(arrival), keep=spec.catchup_window + 86400
        ):
            return  # another replica has this nominal time
        previous = cursor.last_run
        if spec.overlap != "allow" and previous and await self._running(previous):
            if spec.overlap == "skip":
                await self._skip(arrival, f"overlap: run {previous} is still running")
                return
            if spec.overlap == "buffer_one":
                if cursor.buffered is not None:
                    await self._firing.record(
                        cursor.buffered, "skipped", "overlap: a later fire took its place"
                    )
                cursor.buffered = arrival
                await self._firing.record(arrival, "buffered", f"until run {previous} finishes")
                await self._firing.store.settle(arrival.idempotency_key)
                return
            await self._firing.client.cancel(previous, f"overlap: {arrival.key} fired")
        await self._firing.handle(arrival)
        cursor.last_run = arrival.run_id
        cursor.last_fire = datetime.fromisoformat(arrival.key).timestamp()

    async def _release_buffered(self, cursor: ScheduleCursor) -> None:
        waiting = cursor.buffered
        if waiting is None or (cursor.last_run and await self._running(cursor.last_run)):
            return
        cursor.buffered = None
        await self._firing.handle(waiting)
        cursor.last_run = waiting.run_id
        cursor.last_fire = datetime.fromisoformat(waiting.key).timestamp()

    async def _running(self, run_id: str) -> bool:
        try:
            return not (await self._firing.client.state(run_id)).finished
        except NotFound:
            return True  # fired, not yet recorded by its coordinator

    async def _skip(self, arrival: Arrival, reason: str) -> None:
        await self._firing.record(arrival, "skipped", reason)
        await self._firing.store.settle(arrival.idempotency_key)

    async def _record_misses(
        self,
        served: Served,
        schedule: Schedule,
        checked: datetime,
        now: datetime,
        fired: list[datetime],
    ) -> None:
        """Say which nominal times passed without a fire, and why."""
        spec = served.trigger.schedule
        assert spec is not None
        chosen = set(fired)
        missed = 0
        # Within the catch-up window only: a long downtime costs no long walk.
        start = max(checked, now - timedelta(seconds=spec.catchup_window))
        for nominal in schedule.fires(start):
            if nominal > now:
                break
            if nominal in chosen:
                continue
            missed += 1
            if missed > RECORDED_MISSES:
                log.warning("schedule missed more times than recorded", trigger=served.trigger.name)
                break
            arrival = tick_arrival(served, nominal, self._clock())
            if await self._firing.store.admit(arrival.idempotency_key, b"", keep=86400):
                await self._skip(arrival, f"missed while no server ran (catchup: {spec.catchup})")


def read_cursor(raw: bytes | None) -> ScheduleCursor | None:
    return None if raw is None else _decode_cursor(raw)
