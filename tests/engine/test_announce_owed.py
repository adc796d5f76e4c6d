"""Run changes are announced at least once: each stays unannounced in the run log until
the broker has confirmed it, and what a coordinator could not announce before it
stopped goes out from the next one, with the id it had."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgspec
import pytest
import structlog

from contracts.events import ParentTask, RunCompleted, RunSubmitted
from contracts.messages import ShardWake
from contracts.ports import RunStore, Transport
from contracts.topology import shard_queue
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from engine import announce
from engine.announce import ANNOUNCE_AGAIN_AFTER, AnnounceLevel, Announcer
from engine.coordinator import Coordinator
from engine.runlog.memory import MemoryRunLog
from engine.transport.memory import MemoryTransport
from tests.engine.test_announce import ConfirmingBroker, _state, until

ONE = parse_workflow(
    """
name: one
tasks:
  - name: a
    command: [echo, hi]
"""
)


class RefusingTransport(MemoryTransport):
    """A broker that takes the tasks and results but not one announcement."""

    async def announce(self, routing_key: str, body: bytes) -> None:
        raise ConnectionError("the state-changes exchange refused it")


def _submitted(run_id: str) -> RunSubmitted:
    return RunSubmitted(run_id=run_id, at=1.0, workflow={"name": "w"}, params={})


async def test_a_change_is_unannounced_until_the_broker_confirms_it() -> None:
    store = MemoryRunLog()
    submitted = _submitted("r1")
    await store.append("r1", [submitted])
    broker = ConfirmingBroker()
    announcer = Announcer(cast(Transport, broker), runlog=store)
    announcer(submitted, _state("r1"))
    await until(lambda: broker.sent == ["r1"])
    assert await store.unannounced() == [submitted]  # sent, not confirmed
    # A coordinator looking for what was left does not send it a second time.
    assert await announcer.announce_unannounced() == 0
    broker.confirm_all()
    await announcer.drain()
    assert await store.unannounced() == []
    assert broker.sent == ["r1"]


async def test_run_changes_a_stopped_coordinator_could_not_announce_go_out_from_the_next(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(announce, "PUBLISH_ATTEMPTS", 1)
    with structlog.testing.capture_logs() as logs:
        async with EmbeddedEngine(store, transport=RefusingTransport()) as engine:
            state = await engine.run(ONE, {})
    assert state.status == "succeeded"
    assert [entry["event"] for entry in logs].count("state change not announced") == 2
    run_id = state.run_id
    left = [f"{run_id}/run_submitted", f"{run_id}/run_completed/0"]
    assert [event.id for event in await store.unannounced()] == left

    transport = MemoryTransport()
    async with EmbeddedEngine(store, transport=transport) as engine:
        await transport.bind_announcements("changes", "run.#")  # a listener, as a server's
        assert await engine.coordinator.announcer.announce_unannounced() == 2
        await until_depth(transport, 2)
        documents = [
            msgspec.json.decode(d.body)
            for d in (await transport.consume("changes", prefetch=10)).ready(10)
        ]
    assert [(d["id"], d["type"], d["subject"]) for d in documents] == [
        (left[0], "dev.conveyor.run.running", run_id),
        (left[1], "dev.conveyor.run.succeeded", run_id),
    ]
    assert documents[1]["data"]["workflow"] == "one"
    assert documents[1]["data"]["state"] == "succeeded"
    assert await store.unannounced() == []  # confirmed: never announced a third time


async def until_depth(transport: MemoryTransport, depth: int) -> None:
    async with asyncio.timeout(10):
        while (await transport.queue_depth("changes") or 0) < depth:
            await asyncio.sleep(0)


async def test_with_announcements_off_nothing_is_left_owed(store: RunStore) -> None:
    submitted = _submitted("r1")
    await store.append("r1", [submitted])
    await store.append("r2", [_submitted("r2")])
    transport = MemoryTransport()
    await transport.bind_announcements("changes", "#")
    announcer = Announcer(transport, AnnounceLevel.NONE, runlog=store)
    announcer(submitted, _state("r1"))
    await announcer.drain()
    assert [event.run_id for event in await store.unannounced()] == ["r2"]
    assert await announcer.announce_unannounced() == 0
    await announcer.drain()
    assert await store.unannounced() == []
    assert not await transport.queue_depth("changes")


async def test_a_change_the_log_cannot_mark_is_announced_again_not_lost() -> None:
    class Unmarkable(MemoryRunLog):
        async def announced(self, event_ids: Any) -> None:
            raise ConnectionError("the run log is away")

    store = Unmarkable()
    submitted = _submitted("r1")
    await store.append("r1", [submitted])
    transport = MemoryTransport()
    announcer = Announcer(transport, runlog=store)
    with structlog.testing.capture_logs() as logs:
        announcer(submitted, _state("r1"))
        await announcer.drain()
    assert "they will be announced again" in logs[-1]["event"]
    assert await store.unannounced() == [submitted]


async def test_over_a_broker_in_memory_the_listener_marks_what_it_handled() -> None:
    """An embedded server's broker dies with its process: a change published to it is
    still owed until its notifier has handled it."""
    store = MemoryRunLog()
    submitted = _submitted("r1")
    await store.append("r1", [submitted])
    transport = MemoryTransport()
    await transport.bind_announcements("changes", "run.#")
    announcer = Announcer(transport, runlog=store, marks=False)
    announcer(submitted, _state("r1"))
    await announcer.drain()
    assert await transport.queue_depth("changes") == 1
    assert await store.unannounced() == [submitted]


async def test_a_shards_coordinator_announces_what_was_left_a_while_as_it_checks_on_it() -> None:
    """A change its broker refused five times goes out at a later check on its shard,
    once it is old enough that no publish of it can still be going on."""
    now = 1_000.0
    store = MemoryRunLog()
    transport = MemoryTransport()
    coordinator = Coordinator(transport, store, clock=lambda: now)
    await coordinator.start()
    try:
        await transport.bind_announcements("changes", "run.#")
        old = RunCompleted(run_id="old", at=now - ANNOUNCE_AGAIN_AFTER - 1, state="failed")
        young = RunCompleted(run_id="young", at=now - 1, state="succeeded")
        for done in (old, young):
            submitted = RunSubmitted(
                run_id=done.run_id, at=done.at - 1, workflow={"name": "w"}, params={}, shard=0
            )
            await store.append(done.run_id, [submitted, done])
            await store.announced([submitted.id])
        await coordinator.handle(ShardWake(shard=1, at=now), 1)
        await coordinator.handle(ShardWake(shard=0, at=now), 0)
        await until_depth(transport, 1)
        [delivery] = (await transport.consume("changes", prefetch=10)).ready(10)
        assert msgspec.json.decode(delivery.body)["id"] == old.id
    finally:
        await coordinator.stop()
    assert await store.unannounced() == [young]


class TellingBroker(MemoryTransport):
    """Records what goes to queues, and the announcements."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[tuple[str, Any]] = []
        self.announced: list[str] = []

    async def publish(self, queue: str, bodies: Any, **_: Any) -> None:
        self.queued += [(queue, msgspec.json.decode(body)) for body in bodies]

    async def announce(self, routing_key: str, body: bytes) -> None:
        self.announced.append(routing_key)


@pytest.mark.parametrize("level", [AnnounceLevel.RUNS, AnnounceLevel.NONE])
async def test_a_child_runs_end_is_told_its_parent_at_least_once_at_every_level(
    level: AnnounceLevel,
) -> None:
    """The end of a child run (of a workflow step) is its parent's attempt's outcome:
    it goes to the parent's shard with the run's announcement, announcements off or not,
    and a coordinator that stopped before it went sends it from the log."""
    store = MemoryRunLog()
    parent = ParentTask(run_id="p", task="train", index=2, attempt=1, shard=3)
    child = RunSubmitted(run_id="c", at=1.0, workflow={"name": "w"}, params={}, parent=parent)
    ended = RunCompleted(run_id="c", at=2.0, state="succeeded", outputs={"n": 1}, parent=parent)
    await store.append("c", [child])
    await store.append("c", [ended])
    broker = TellingBroker()
    announcer = Announcer(broker, level, store)
    assert await announcer.announce_unannounced() == 1 + (level == AnnounceLevel.RUNS)
    await announcer.drain()
    told = [body for queue, body in broker.queued if queue == shard_queue(3)]
    assert [(b["type"], b["run_id"], b["task"], b["index"], b["result"]) for b in told] == [
        ("task_succeeded", "p", "train", 2, {"n": 1})
    ]
    assert broker.announced == (
        [] if level == AnnounceLevel.NONE else ["run.w.running", "run.w.succeeded"]
    )
    assert await store.unannounced() == []


async def test_a_child_runs_end_as_it_happens_is_told_its_parent_with_announcements_off() -> None:
    parent = ParentTask(run_id="p", task="train", index=0, attempt=2, shard=1)
    ended = RunCompleted(run_id="c", at=2.0, state="failed", reason="boom", parent=parent)
    broker = TellingBroker()
    announcer = Announcer(broker, AnnounceLevel.NONE, MemoryRunLog())
    announcer(ended, _state("c"))
    await announcer.drain()
    [(queue, told)] = broker.queued
    assert queue == shard_queue(1) and broker.announced == []
    assert (told["type"], told["attempt"], told["error"]) == (
        "task_failed",
        2,
        "run c failed: boom",
    )
