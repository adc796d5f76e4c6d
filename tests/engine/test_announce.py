"""The announcer publishes state changes in order and keeps pace with a busy engine and
with a fan-out's thousands of task changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import cast

import msgspec
import pytest
import structlog

from contracts.events import RunSubmitted, TaskStarted
from contracts.ports import Transport
from contracts.validation import parse_workflow
from engine import announce
from engine.announce import IN_FLIGHT, AnnounceLevel, Announcer
from engine.client import Client
from engine.coordinator import Coordinator
from engine.runlog.memory import MemoryRunLog
from engine.state.model import RunState
from engine.transport.memory import MemoryTransport

CHANGES = 300
FORTY = parse_workflow(
    """
name: forty
tasks:
  - name: each
    items: range(40)
    command: [echo, "{{ item }}"]
"""
)


def _state(run_id: str) -> RunState:
    return cast(RunState, SimpleNamespace(run_id=run_id, workflow=SimpleNamespace(name="w")))


async def test_announcements_do_not_wait_a_loop_turn_each_while_the_engine_is_busy() -> None:
    """An embedded server taking webhooks keeps its loop full. Were each announcement to
    need turns of that loop of its own, they would fall behind the runs by thousands and
    reach outbound webhooks seconds late; the queued ones go out in a turn or two."""
    transport = MemoryTransport()
    await transport.bind_announcements("changes", "run.#")
    announcer = Announcer(transport)
    for n in range(CHANGES):
        run_id = f"run-{n}"
        announcer(
            RunSubmitted(run_id=run_id, at=0.0, workflow={"name": "w"}, params={}), _state(run_id)
        )

    turns = 0
    async with asyncio.timeout(10):
        while await transport.queue_depth("changes") != CHANGES:
            turns += 1  # the engine's other work: one callback per turn of the loop
            await asyncio.sleep(0)
    windows = -(-CHANGES // IN_FLIGHT)  # sent together, a window of them at a time
    assert turns <= 3 * windows, f"{CHANGES} announcements took {turns} turns of the loop"

    consumer = await transport.consume("changes", prefetch=CHANGES)
    delivered = consumer.ready(CHANGES)
    assert [msgspec.json.decode(d.body)["subject"] for d in delivered] == [
        f"run-{n}" for n in range(CHANGES)
    ]
    await announcer.drain()


class ConfirmingBroker:
    """Takes announcements in the order they are sent, and confirms them when told (a
    broker confirms a persistent message once it is stored)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.unconfirmed: list[asyncio.Future[None]] = []
        self.refuse_once: set[str] = set()

    async def announce(self, routing_key: str, body: bytes) -> None:
        subject = msgspec.json.decode(body)["subject"]
        if subject in self.refuse_once:
            self.refuse_once.discard(subject)
            raise ConnectionError("the channel closed")
        self.sent.append(subject)
        confirmed = asyncio.get_running_loop().create_future()
        self.unconfirmed.append(confirmed)
        await confirmed

    def confirm_all(self) -> None:
        for confirmed in self.unconfirmed:
            if not confirmed.done():
                confirmed.set_result(None)


def _announce(announcer: Announcer, count: int) -> None:
    for n in range(count):
        run_id = f"run-{n}"
        submitted = RunSubmitted(run_id=run_id, at=0.0, workflow={"name": "w"}, params={})
        announcer(submitted, _state(run_id))


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0)


async def test_announcements_are_sent_in_order_without_waiting_for_each_confirm() -> None:
    """Confirmed one at a time, a fan-out's task changes fell behind its run by seconds:
    a broker's confirm takes a millisecond, and a 10,000-item fan-out makes 20,000."""
    broker = ConfirmingBroker()
    announcer = Announcer(cast(Transport, broker))
    _announce(announcer, IN_FLIGHT + 10)
    await until(lambda: len(broker.sent) == IN_FLIGHT)  # none confirmed yet
    assert broker.sent == [f"run-{n}" for n in range(IN_FLIGHT)]
    broker.confirm_all()
    await until(lambda: len(broker.sent) == IN_FLIGHT + 10)
    assert broker.sent == [f"run-{n}" for n in range(IN_FLIGHT + 10)]
    broker.confirm_all()
    await announcer.drain()


async def test_an_announcement_refused_once_is_sent_again() -> None:
    broker = ConfirmingBroker()
    broker.refuse_once.add("run-1")
    announcer = Announcer(cast(Transport, broker))
    _announce(announcer, 3)
    await until(lambda: len(broker.sent) == 2)
    broker.confirm_all()
    await until(lambda: len(broker.sent) == 3)  # after its back-off
    assert broker.sent == ["run-0", "run-2", "run-1"]  # the one sent again comes last
    broker.confirm_all()
    await announcer.drain()


async def test_a_backlog_of_unpublished_changes_holds_the_coordinator_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker slower than the runs: the changes waiting to be published stop growing
    at the bound (the coordinator takes in nothing more meanwhile), and none is lost."""
    monkeypatch.setattr(announce, "IN_FLIGHT", 2)
    monkeypatch.setattr(announce, "BACKLOG", 10)
    broker = ConfirmingBroker()
    transport = MemoryTransport()
    transport.announce = broker.announce  # type: ignore[method-assign]
    store = MemoryRunLog()
    coordinator = Coordinator(transport, store, announce=AnnounceLevel.TASKS)
    await coordinator.start()
    try:
        run_id = await Client(store, transport).submit(FORTY, {})
        await until(lambda: coordinator.holds(run_id))
        starts = [
            TaskStarted(run_id=run_id, at=1.0, task="each", index=index) for index in range(40)
        ]

        async def report() -> None:  # as the workers would, one by one
            for started in starts:
                await coordinator.handle_event(started)

        reporting = asyncio.create_task(report())
        for _ in range(200):  # turns of the loop: enough for all 40 were nothing held back
            await asyncio.sleep(0)
        waiting = coordinator.announcer._queue.qsize()
        assert not reporting.done()
        assert 10 <= waiting <= 11, waiting  # 2 in flight besides
        while not reporting.done():
            broker.confirm_all()
            await asyncio.sleep(0)
        while len(broker.sent) < 41:  # the run's start, and each item's
            broker.confirm_all()
            await asyncio.sleep(0)
        assert broker.sent == [run_id] + [f"{run_id}/each/{n}" for n in range(40)]
    finally:
        broker.confirm_all()
        await coordinator.stop()


async def test_changes_a_stop_leaves_unpublished_are_counted_aloud() -> None:
    broker = ConfirmingBroker()  # confirms nothing: the broker is gone
    announcer = Announcer(cast(Transport, broker))
    _announce(announcer, IN_FLIGHT + 5)
    await until(lambda: len(broker.sent) == IN_FLIGHT)
    with structlog.testing.capture_logs() as logs:
        await announcer.drain(timeout=0.05)
    assert [(entry["event"], entry["count"]) for entry in logs] == [
        ("state changes not announced: stopped before the broker took them", IN_FLIGHT + 5)
    ]
    broker.confirm_all()
    await until(lambda: len(broker.sent) == IN_FLIGHT + 5)
    broker.confirm_all()
    with structlog.testing.capture_logs() as logs:
        await announcer.drain()  # all of them taken since: nothing said
    assert logs == []
