"""Schedules fire each nominal time once across replicas and catch up as declared;
sensors start one run per new or changed object, across restarts."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from engine.client import Client
from engine.triggers.firing import Firing
from engine.triggers.registry import Registry, Served
from engine.triggers.scheduler import Scheduler
from engine.triggers.sensors import Sensors
from engine.triggers.stores.memory import MemoryTriggerStore
from tests.clock import Clock

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def every_second(
    catchup: str = "latest", overlap: str = "allow", script: str = "true", every: int = 1
) -> str:
    return textwrap.dedent(
        f"""
        name: ticking
        params: {{at: {{type: str, default: ""}}}}
        tasks: [{{name: a, script: "{script}"}}]
        triggers:
          - name: tick
            schedule: {{every: {every}s, catchup: {catchup}, overlap: {overlap},
                        params: {{at: "{{{{ nominal }}}}"}}}}
        """
    )


class Replica:
    def __init__(self, store: MemoryTriggerStore, client: Client, clock: Clock) -> None:
        self.registry = Registry(store)
        self.firing = Firing(store, client, clock=clock, registry=self.registry)
        self.scheduler = Scheduler(self.registry, self.firing, clock=clock)
        self.sensors = Sensors(self.registry, self.firing, clock=clock)

    async def served(self) -> Served:
        await self.registry.refresh()
        return next(self.registry.served())


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
async def engine(clock: Clock) -> AsyncIterator[EmbeddedEngine]:
    async with EmbeddedEngine(workers=4) as engine:
        yield engine


async def fired_runs(engine: EmbeddedEngine) -> list[str]:
    return sorted(r.run_id for r in await engine.client.runs(limit=10_000))


async def test_two_replicas_fire_each_nominal_time_once(
    engine: EmbeddedEngine, clock: Clock
) -> None:
    store = MemoryTriggerStore(clock)
    a, b = Replica(store, engine.client, clock), Replica(store, engine.client, clock)
    await a.registry.register(parse_workflow(every_second()))
    served_a, served_b = await a.served(), await b.served()
    await a.scheduler.tick(served_a)  # first sight: starts from now
    for step in range(20):
        clock.now += 1
        # Both replicas wake for the same nominal time, in either order.
        first, second = (a, b) if step % 2 else (b, a)
        await first.scheduler.tick(served_a if first is a else served_b)
        await second.scheduler.tick(served_b if second is b else served_a)
    records = await store.records("ticking", "tick", limit=100)
    assert [r.decision for r in records] == ["fired"] * 20
    assert len({r.key for r in records}) == 20
    for record in records:
        assert record.run_id is not None
        state = await engine.client.watch(record.run_id, timeout=10)
        assert state.params["at"] == record.key
    assert len(await fired_runs(engine)) == 20


@pytest.mark.parametrize(("catchup", "fired"), [("skip", 0), ("latest", 1), ("all", 10)])
async def test_after_ten_missed_times_catchup_does_what_it_says(
    engine: EmbeddedEngine, clock: Clock, catchup: str, fired: int
) -> None:
    store = MemoryTriggerStore(clock)
    replica = Replica(store, engine.client, clock)
    await replica.registry.register(parse_workflow(every_second(catchup, every=2)))
    served = await replica.served()
    await replica.scheduler.tick(served)
    clock.now += 21.5  # down for ten nominal times (the last 1.5 s ago: missed, not due)
    await replica.scheduler.tick(served)
    records = await store.records("ticking", "tick", limit=100)
    assert sum(r.decision == "fired" for r in records) == fired
    skipped = [r for r in records if r.decision == "skipped"]
    assert len(skipped) == 10 - fired
    assert all("missed while no server ran" in r.reason for r in skipped)
    for record in records:
        if record.decision == "fired":
            assert record.run_id is not None
            await engine.client.watch(record.run_id, timeout=10)
    assert len(await fired_runs(engine)) == fired
    if catchup == "latest":
        [fire] = [r for r in records if r.decision == "fired"]
        assert fire.key == datetime.fromtimestamp(START + 20, UTC).isoformat()


async def test_overlap_skip_and_buffer_one(engine: EmbeddedEngine, clock: Clock) -> None:
    for policy in ("skip", "buffer_one"):
        store = MemoryTriggerStore(clock)
        replica = Replica(store, engine.client, clock)
        wf = parse_workflow(every_second(overlap=policy, script="sleep 0.5"))
        await replica.registry.register(wf)
        served = await replica.served()
        await replica.scheduler.tick(served)
        clock.now += 1
        await replica.scheduler.tick(served)  # fires; its run sleeps
        clock.now += 1
        await replica.scheduler.tick(served)  # the previous run is still going
        decisions = [r.decision for r in await store.records("ticking", "tick")]
        expected = "skipped" if policy == "skip" else "buffered"
        assert decisions == [expected, "fired"], policy
        first = (await store.records("ticking", "tick"))[-1].run_id
        assert first is not None
        await engine.client.watch(first, timeout=10)
        await replica.scheduler.tick(served)  # previous finished: a buffered fire goes now
        decisions = [r.decision for r in await store.records("ticking", "tick")]
        if policy == "buffer_one":
            assert decisions == ["fired", "buffered", "fired"]
        else:
            assert decisions == ["skipped", "fired"]
        clock.now += 5


SENSOR = """
name: landed
params: {path: {type: str}}
tasks:
  - name: take
    env: {FILE: "{{ params.path }}"}
    script: 'test -f "$FILE"'
triggers:
  - name: csv
    sensor: {files: "file://FOLDER/*.csv", interval: 0.1s, params: {path: "event['path']"}}
"""


async def test_a_sensor_starts_one_run_per_new_or_changed_file_across_restarts(
    engine: EmbeddedEngine, clock: Clock, tmp_path: Path
) -> None:
    store = MemoryTriggerStore(clock)
    inbox = tmp_path / "in"
    inbox.mkdir()
    first = Replica(store, engine.client, clock)
    await first.registry.register(parse_workflow(SENSOR.replace("FOLDER", str(inbox))))
    served = await first.served()
    for i in range(250):
        (inbox / f"f{i:03}.csv").write_text(str(i))
    (inbox / "ignored.txt").write_text("not matched")
    assert await first.sensors.look(served) == 250
    assert await first.sensors.look(served) == 0
    # Files land while the server restarts: a new process over the same store.
    for i in range(250, 500):
        (inbox / f"f{i:03}.csv").write_text(str(i))
    second = Replica(store, engine.client, clock)
    served = await second.served()
    assert await second.sensors.look(served) == 250
    (inbox / "f000.csv").write_text("changed, and longer")
    assert await second.sensors.look(served) == 1
    records = await store.records("landed", limit=1000)
    assert [r.decision for r in records] == ["accepted"] * 501
    assert len({r.run_id for r in records}) == 501
    for record in records:
        assert record.run_id is not None
        state = await engine.client.watch(record.run_id, timeout=20)
        assert state.status == "succeeded", state.params  # the step found its file
    assert len(await engine.client.runs(limit=10_000)) == 501


async def test_a_crash_between_admitting_and_saving_the_cursor_makes_no_second_run(
    engine: EmbeddedEngine, clock: Clock, tmp_path: Path
) -> None:
    store = MemoryTriggerStore(clock)
    (tmp_path / "a.csv").write_text("a")
    replica = Replica(store, engine.client, clock)
    await replica.registry.register(parse_workflow(SENSOR.replace("FOLDER", str(tmp_path))))
    served = await replica.served()
    assert await replica.sensors.look(served) == 1
    await store.set_cursor("sensor:landed:csv", b"{}")  # as if the cursor was never saved
    assert await replica.sensors.look(served) == 0
    assert len(await engine.client.runs()) == 1


async def test_a_python_sensor_starts_the_runs_it_asks_for_once(
    engine: EmbeddedEngine, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.steps import sensorfuncs

    numbers = tmp_path / "numbers"
    numbers.write_text("3 5")
    monkeypatch.setenv("SENSOR_NUMBERS", str(numbers))
    sensorfuncs.CALLS.clear()
    store = MemoryTriggerStore(clock)
    replica = Replica(store, engine.client, clock)
    await replica.registry.register(sensorfuncs.numbers_flow.spec)
    served = await replica.served()
    assert await replica.sensors.look(served) == 2
    numbers.write_text("3 5 8")
    assert await replica.sensors.look(served) == 1
    # The cursor was lost (a crash before it was kept): asked again, nothing doubles.
    await store.set_cursor("sensor:numbers:fresh", b"0")
    assert await replica.sensors.look(served) == 0
    assert sensorfuncs.CALLS == [None, "2", "0"]
    results = []
    for record in await store.records("numbers"):
        assert record.run_id is not None
        results.append((await engine.client.watch(record.run_id, timeout=10)).params["n"])
    assert sorted(results) == [3, 5, 8]


def test_python_triggers_check_their_fields_at_once() -> None:
    from pydantic import ValidationError

    from conveyor import triggers

    with pytest.raises(ValidationError, match="exactly one of cron and every"):
        triggers.schedule("nightly", cron="0 2 * * *", every=10)
    with pytest.raises(ValidationError, match="secret_env"):
        triggers.webhook("push", preset="github")
    with pytest.raises(ValidationError, match="Extra inputs"):
        triggers.queue("q", "orders", parms={})


async def test_a_local_folder_pushes_new_files_to_its_sensor(
    server: object, tmp_path: Path
) -> None:
    import asyncio
    import time

    from tests.server.conftest import Server

    assert isinstance(server, Server)
    slow = SENSOR.replace("FOLDER", str(tmp_path)).replace("interval: 0.1s", "interval: 60s")
    await server.register(slow)
    # Files keep landing, one every half second; each must be seen within seconds,
    # not at the 60 s poll.
    seen: set[str] = set()
    for n in range(6):
        (tmp_path / f"f{n}.csv").write_text(str(n))
        began = time.monotonic()
        while f"f{n}.csv" not in seen:
            assert time.monotonic() - began < 5, f"f{n}.csv was not seen"
            await asyncio.sleep(0.02)
            seen = {
                Path((r.key or "").split("@")[0]).name
                for r in await server.runtime.store.records("landed")
            }
        await asyncio.sleep(0.5)
    assert len(seen) == 6


async def test_overlap_cancel_other_cancels_the_previous_run(
    engine: EmbeddedEngine, clock: Clock
) -> None:
    store = MemoryTriggerStore(clock)
    replica = Replica(store, engine.client, clock)
    await replica.registry.register(
        parse_workflow(every_second(overlap="cancel_other", script="sleep 30"))
    )
    served = await replica.served()
    await replica.scheduler.tick(served)
    clock.now += 1
    await replica.scheduler.tick(served)
    [first] = await store.records("ticking", "tick")
    assert first.run_id is not None
    clock.now += 1
    await replica.scheduler.tick(served)  # the first run still sleeps: it is cancelled
    previous = await engine.client.watch(first.run_id, timeout=10)
    assert previous.status == "cancelled" and "overlap" in previous.reason
    records = await store.records("ticking", "tick")
    assert [r.decision for r in records] == ["fired", "fired"]
    assert records[0].run_id is not None
    await engine.client.cancel(records[0].run_id)


async def test_a_watched_folder_s_sensor_waits_between_looks_and_keeps_its_watch(
    engine: EmbeddedEngine, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interval that passes with no change must not end the folder's watch: once it
    did, every wait after it ended at once and the sensor looked without pause."""
    import asyncio
    import time

    from engine.triggers import sensors

    watched = sensors._changes
    pushed: list[object] = []
    closed = asyncio.Event()

    async def observed(folder: Path) -> AsyncIterator[object]:
        try:
            async for change in watched(folder):
                pushed.append(change)
                yield change
        finally:
            closed.set()

    monkeypatch.setattr(sensors, "_changes", observed)
    replica = Replica(MemoryTriggerStore(clock), engine.client, clock)
    interval = 0.2
    flow = SENSOR.replace("FOLDER", str(tmp_path)).replace("0.1s", f"{interval}s")
    await replica.registry.register(parse_workflow(flow))
    looked: list[float] = []
    look = replica.sensors.look

    async def counted(served: Served) -> int:
        looked.append(time.monotonic())
        return await look(served)

    monkeypatch.setattr(replica.sensors, "look", counted)
    await replica.registry.refresh()
    await replica.sensors.apply()
    try:
        async with asyncio.timeout(20):
            while len(looked) < 4:  # three intervals with nothing in the folder
                await asyncio.sleep(0.02)
        assert looked[3] - looked[0] >= 3 * interval * 0.9  # not three looks at once
        assert not closed.is_set() and pushed == []
        (tmp_path / "late.csv").write_text("x")
        async with asyncio.timeout(20):
            while not pushed:  # the watch still pushes what lands
                await asyncio.sleep(0.02)
            while not await replica.firing.store.records("landed"):
                await asyncio.sleep(0.02)
    finally:
        await replica.sensors.stop()
    assert closed.is_set()  # stopping closes the watch


async def test_a_sensor_whose_looks_fail_says_so_until_one_works(
    server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from tests.server.conftest import Server

    assert isinstance(server, Server)
    numbers = tmp_path / "numbers"  # not there yet: each look fails
    monkeypatch.setenv("SENSOR_NUMBERS", str(numbers))
    await server.register(
        """
        name: numbers
        params: {n: {type: int}}
        tasks: [{name: show, script: "true"}]
        triggers:
          - name: fresh
            sensor: {python: "tests.steps.sensorfuncs:new_numbers", interval: 0.1s}
        """
    )

    async def problem() -> str | None:
        listed = (await server.http.get("/api/v1/workflows")).json()["items"]
        (numbers_flow,) = [w for w in listed if w["name"] == "numbers"]
        found: str | None = numbers_flow["triggers"][0]["problem"]
        return found

    async with asyncio.timeout(20):
        while (said := await problem()) is None:
            await asyncio.sleep(0.02)
    assert said.startswith("last look failed: FileNotFoundError")
    assert str(numbers) in said
    numbers.write_text("4")
    async with asyncio.timeout(20):
        while not await server.runtime.store.records("numbers"):
            await asyncio.sleep(0.02)
    assert await problem() is None
