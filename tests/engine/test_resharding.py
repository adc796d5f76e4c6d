"""Changing the number of coordinator shards while runs are in flight: nothing drains,
nothing moves, every run finishes once (on the in-memory twins and on real servers)."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections import Counter

from contracts.codec import encode
from contracts.events import Event, RunSubmitted, TaskDispatched, TaskSucceeded
from contracts.topology import shard_of, shard_queue
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from engine.runids import run_id_of
from engine.state.model import RunState
from tests.deadletters import until_dead_lettered

GATED = parse_workflow(
    textwrap.dedent(
        """
        name: gated
        tasks:
          - name: before
            script: echo before
          - name: gate
            depends: [before]
            wait: {}
            timeout: 5m
          - name: after
            depends: [gate]
            script: echo after
        """
    )
)
"""A run that stays in flight until it is signalled (``gate``)."""


class Waiting:
    """Which runs have reached their gate (dispatched the wait step)."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        self.runs: set[str] = set()
        self._changed = asyncio.Condition()
        engine.coordinator.observe(self._see)

    def _see(self, event: Event, _state: RunState) -> None:
        if isinstance(event, TaskDispatched) and event.task == "gate":
            self.runs.add(event.run_id)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def all(self, run_ids: list[str]) -> None:
        async with asyncio.timeout(30), self._changed:
            await self._changed.wait_for(lambda: self.runs.issuperset(run_ids))


async def release(engine: EmbeddedEngine, run_ids: list[str]) -> list[RunState]:
    """Open every run's gate; their final states, each checked succeeded."""
    for run_id in run_ids:
        await engine.client.signal(run_id, "gate", {"ok": True})
    states = [await asyncio.wait_for(engine.coordinator.wait(r), 30) for r in run_ids]
    assert {s.status for s in states} == {"succeeded"}
    return states


async def test_shards_grow_while_runs_are_in_flight(engine: EmbeddedEngine) -> None:
    waiting = Waiting(engine)
    old = await engine.client.shard_map()
    first = [await engine.submit(GATED, {}) for _ in range(20)]
    await waiting.all(first)

    new = await engine.client.reshard(old.count * 2)
    assert (new.count, new.queues) == (old.count * 2, old.count * 2)
    await engine.coordinator.refresh_shards()
    second = [await engine.submit(GATED, {}) for _ in range(20)]
    await waiting.all(second)

    states = await release(engine, first + second)

    # Runs submitted before the change stayed on the old shards; later ones use all.
    assert {s.shard for s in states[:20]} <= set(range(old.count))
    assert {s.shard for s in states[20:]} & set(range(old.count, new.count))
    for run_id in first + second:
        summary = await engine.store.summary(run_id)
        assert summary is not None and summary.state == "succeeded"
        succeeded = Counter(
            e.task for e in await engine.store.read(run_id) if isinstance(e, TaskSucceeded)
        )
        assert succeeded == {"before": 1, "gate": 1, "after": 1}


async def test_a_second_submission_after_the_change_is_the_same_run(
    engine: EmbeddedEngine,
) -> None:
    waiting = Waiting(engine)
    old = await engine.client.shard_map()
    # A key whose run hashes to another shard once there are more of them.
    key = next(
        f"order-{n}"
        for n in range(1000)
        if shard_of(run_id_of(f"order-{n}"), old.count)
        != shard_of(run_id_of(f"order-{n}"), old.count + 2)
    )
    run_id = await engine.submit(GATED, {}, idempotency_key=key)
    await waiting.all([run_id])
    await engine.client.reshard(old.count + 2)
    await engine.coordinator.refresh_shards()
    assert await engine.submit(GATED, {}, idempotency_key=key) == run_id

    # The resubmission went to the new shard; its coordinator leaves the run to the
    # shard it is pinned to. A run submitted after it on that shard finishing proves
    # the duplicate was handled first (a shard's messages are handled in order).
    new_shard = shard_of(run_id, old.count + 2)
    drain_key = next(
        f"drain-{n}"
        for n in range(1000)
        if shard_of(run_id_of(f"drain-{n}"), old.count + 2) == new_shard
    )
    plain = parse_workflow("name: plain\ntasks:\n  - name: a\n    script: echo ok\n")
    drained = await engine.submit(plain, {}, idempotency_key=drain_key)
    assert (await asyncio.wait_for(engine.coordinator.wait(drained), 30)).status == "succeeded"

    (state,) = await release(engine, [run_id])
    assert state.shard == shard_of(run_id, old.count)
    events = await engine.store.read(run_id)
    assert sum(isinstance(e, RunSubmitted) for e in events) == 1
    assert not await engine.transport.dead_letters(10)


async def test_an_event_on_a_shard_its_run_is_not_pinned_to_is_dead_lettered(
    engine: EmbeddedEngine,
) -> None:
    """Only a run's own shard acts on it: two coordinators must never hold one run."""
    waiting = Waiting(engine)
    run_id = await engine.submit(GATED, {})
    await waiting.all([run_id])
    pinned = (await engine.client.state(run_id)).shard
    count = (await engine.client.reshard((await engine.client.shard_map()).count + 1)).count
    await engine.coordinator.refresh_shards()
    elsewhere = next(s for s in range(count) if s != pinned)
    stray = TaskSucceeded(run_id=run_id, at=1.0, task="gate", attempt=1, result=None)
    await engine.transport.publish(shard_queue(elsewhere), [encode(stray)])
    await until_dead_lettered(engine.transport, encode(stray), timeout=20)
    state = await engine.client.state(run_id)
    assert state.nodes["gate"].status == "running"  # the stray result changed nothing
    await release(engine, [run_id])


def test_run_ids_spread_over_every_shard() -> None:
    counts = Counter(shard_of(uuid.uuid4().hex, 4) for _ in range(4000))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 800


async def test_runs_on_shards_taken_out_of_use_still_finish(engine: EmbeddedEngine) -> None:
    waiting = Waiting(engine)
    old = await engine.client.shard_map()
    wide = await engine.client.reshard(old.count + 2)
    await engine.coordinator.refresh_shards()
    # Six runs on the shards about to be taken out of use, six anywhere.
    retiring = [
        key
        for key in (f"retire-{n}" for n in range(1000))
        if shard_of(run_id_of(key), wide.count) >= old.count
    ][:6]
    runs = [await engine.submit(GATED, {}, idempotency_key=key) for key in retiring]
    runs += [await engine.submit(GATED, {}) for _ in range(6)]
    await waiting.all(runs)

    narrow = await engine.client.reshard(old.count)
    assert (narrow.count, narrow.queues) == (old.count, wide.count)  # still consumed
    await engine.coordinator.refresh_shards()
    later = [await engine.submit(GATED, {}) for _ in range(12)]
    await waiting.all(later)
    states = await release(engine, runs + later)
    assert all((s.shard or 0) >= old.count for s in states[:6])  # finished where pinned
    assert {s.shard for s in states[12:]} <= set(range(old.count))
