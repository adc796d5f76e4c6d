"""A worker is handed no more task messages than it has free slots: a message it could
not start stays in the queue for a worker with room, and it takes work again once a
slot frees. On the in-memory twin and on RabbitMQ (where what a worker is handed is its
consumer's prefetch)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts.codec import decode_coordinator_input, decode_tasks, encode_tasks
from contracts.events import Event, TaskStarted, TaskSucceeded
from contracts.messages import StepSpec, TaskReady
from contracts.ports import Consumer
from contracts.topology import task_queue
from engine.runlog.memory import MemoryRunLog
from workers import intake
from workers.intake import Round
from workers.worker import Worker


@pytest.fixture
def transport(each_transport: Any) -> Any:
    return each_transport


@pytest.fixture
def names() -> tuple[str, str]:
    """A pool and a reply queue of this test's own, on a broker other tests share."""
    tag = uuid.uuid4().hex[:12]
    return f"intake-{tag}", f"test.replies.{tag}"


def message(index: int, replies: str, target: str, **args: Any) -> bytes:
    step = StepSpec(kind="python", target=target, args=args)
    return encode_tasks(
        [TaskReady(run_id="run", task="t", index=index, step=step, reply_to=replies)]
    )


async def until_taken(transport: Any, queue: str) -> None:
    """Until no message waits in ``queue``: a consumer has it in hand."""
    async with asyncio.timeout(10):
        while await transport.queue_depth(queue):
            await asyncio.sleep(0.01)


class Replies:
    """The events workers send back, kept as they come, looked up by item and kind."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._seen: list[Event] = []

    async def of(self, index: int, kind: type[Event]) -> Any:
        async with asyncio.timeout(20):
            while True:
                for event in self._seen:
                    if isinstance(event, kind) and getattr(event, "index", None) == index:
                        return event
                delivery = await anext(aiter(self._consumer))
                await delivery.ack()
                self._seen += [
                    e for e in decode_coordinator_input(delivery.body) if isinstance(e, Event)
                ]


class Watched:
    """A transport whose consumers note the item of each task message they hand out."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.handed: list[int] = []

    async def consume(self, queue: str, *, prefetch: int) -> Consumer:
        return WatchedConsumer(await self.inner.consume(queue, prefetch=prefetch), self.handed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class WatchedConsumer:
    def __init__(self, inner: Consumer, handed: list[int]) -> None:
        self._inner = inner
        self._handed = handed

    def __aiter__(self) -> WatchedConsumer:
        return self

    async def __anext__(self) -> Any:
        delivery = await anext(aiter(self._inner))
        self._handed += [task.index for task in decode_tasks(delivery.body)]
        return delivery

    def ready(self, limit: int) -> Any:
        raise AssertionError("a worker takes its deliveries one by one")

    async def drain(self) -> None:
        await self._inner.drain()

    async def reopen(self, prefetch: int) -> None:
        await self._inner.reopen(prefetch)

    async def close(self) -> None:
        await self._inner.close()


async def test_a_busy_worker_is_not_handed_what_it_cannot_start_and_takes_work_when_free(
    transport: Any, names: tuple[str, str], tmp_path: Path
) -> None:
    pool, replies = names
    release = tmp_path / "release"
    back = Replies(await transport.consume(replies, prefetch=100))
    watched = Watched(transport)
    busy = Worker(watched, MemoryRunLog(), pool=pool, concurrency=1, name="busy")
    await busy.start()
    try:
        await transport.publish(
            task_queue(pool), [message(1, replies, "teststeps:until_exists", path=str(release))]
        )
        started = await back.of(1, TaskStarted)
        assert isinstance(started, TaskStarted) and started.worker == "busy"
        # Its one slot taken, the busy worker is the only consumer of the queue, yet it
        # is not handed item 2: that waits in the queue for a worker with room.
        await transport.publish(task_queue(pool), [message(2, replies, "teststeps:add", a=2, b=1)])
        async with Worker(transport, MemoryRunLog(), pool=pool, concurrency=1, name="idle"):
            taken = await back.of(2, TaskStarted)
            done = await back.of(2, TaskSucceeded)
        assert isinstance(taken, TaskStarted) and taken.worker == "idle"
        assert isinstance(done, TaskSucceeded) and done.result == 3
        assert not release.exists(), "item 2 ran while item 1 held the busy worker's slot"
        assert watched.handed == [1]

        release.touch()
        await back.of(1, TaskSucceeded)
        # Free again, the busy worker consumes again and is the only one left to take it.
        await transport.publish(task_queue(pool), [message(3, replies, "teststeps:add", a=3, b=1)])
        again = await back.of(3, TaskStarted)
        assert isinstance(again, TaskStarted) and again.worker == "busy"
        assert (await back.of(3, TaskSucceeded)).result == 4
        assert watched.handed == [1, 3]
    finally:
        release.touch()
        await busy.stop(grace=5)


async def test_a_worker_takes_as_many_messages_as_it_has_free_slots_and_no_more(
    transport: Any, names: tuple[str, str], tmp_path: Path
) -> None:
    """Three slots, four long steps queued before the worker starts: the first three
    run side by side on it, the fourth waits for another worker."""
    pool, replies = names
    release = tmp_path / "release"
    back = Replies(await transport.consume(replies, prefetch=100))
    long = [message(i, replies, "teststeps:until_exists", path=str(release)) for i in range(4)]
    await transport.publish(task_queue(pool), long)
    watched = Watched(transport)
    busy = Worker(watched, MemoryRunLog(), pool=pool, concurrency=3, name="busy")
    await busy.start()
    try:
        firsts = [await back.of(i, TaskStarted) for i in range(3)]
        assert {start.worker for start in firsts} == {"busy"}
        async with Worker(transport, MemoryRunLog(), pool=pool, concurrency=1, name="idle"):
            fourth = await back.of(3, TaskStarted)
            assert isinstance(fourth, TaskStarted) and fourth.worker == "idle"
            assert sorted(watched.handed) == [0, 1, 2]
            release.touch()
            assert [(await back.of(i, TaskSucceeded)).result for i in range(4)] == ["released"] * 4
    finally:
        release.touch()
        await busy.stop(grace=5)


class Slots:
    """A worker's slots as a round sees them, set by the test."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.room = asyncio.Event()
        self.awaited = asyncio.Event()
        """Set once a settlement waits for slots."""
        self._changed = asyncio.Condition()

    def free_slots(self) -> int:
        return self.free

    async def until_free(self, slots: int) -> None:
        self.awaited.set()
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= slots)

    async def set_free(self, free: int) -> None:
        async with self._changed:
            self.free = free
            self._changed.notify_all()

    def take(self, delivery: Any, tasks: list[TaskReady]) -> None:
        raise AssertionError("not used: the round is driven by the test")


class Drained:
    """A consumer that notes when it is drained."""

    def __init__(self) -> None:
        self.drained = asyncio.Event()

    async def drain(self) -> None:
        self.drained.set()


class Acked:
    body = b""
    headers: dict[str, Any] = {}
    redelivered = False

    def __init__(self) -> None:
        self.settled = asyncio.Event()

    async def ack(self) -> None:
        self.settled.set()

    async def nack(self, *, requeue: bool) -> None:
        self.settled.set()


async def test_a_quick_step_s_message_is_acked_without_draining_once_its_slot_is_free() -> None:
    """Prefetch 2 with 2 free slots: the message takes one; its ack would let the broker
    send two, so it waits until the step ends and frees its slot, then goes out."""
    slots, consumer = Slots(free=2), Drained()
    current = Round(consumer, 2, slots)
    delivered = Acked()
    delivery = current.received(delivered)
    await slots.set_free(1)  # the step runs
    acking = asyncio.create_task(delivery.ack())
    await asyncio.wait_for(slots.awaited.wait(), 1)
    assert not delivered.settled.is_set()
    await slots.set_free(2)  # ... and ends
    await asyncio.wait_for(acking, 1)
    assert delivered.settled.is_set() and not consumer.drained.is_set()


async def test_a_long_step_s_message_is_acked_after_draining(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every slot stays taken: the ack waits ``SETTLE_WAIT``, then drains the consumer
    (so nothing more is sent) and goes out."""
    monkeypatch.setattr(intake, "SETTLE_WAIT", 0.05)
    slots, consumer = Slots(free=1), Drained()
    current = Round(consumer, 1, slots)
    delivered = Acked()
    delivery = current.received(delivered)
    await slots.set_free(0)
    await asyncio.wait_for(delivery.ack(), 1)
    assert consumer.drained.is_set() and delivered.settled.is_set()


async def test_a_batch_that_took_more_slots_than_one_drains_at_once() -> None:
    """Prefetch 3 with 3 free slots: a ten-task batch leaves none, while the broker may
    still send two messages: the consumer is drained before the ack, without waiting."""
    slots, consumer = Slots(free=3), Drained()
    current = Round(consumer, 3, slots)
    delivered = Acked()
    delivery = current.received(delivered)
    await slots.set_free(-7)
    await asyncio.wait_for(delivery.ack(), 1)
    assert consumer.drained.is_set() and delivered.settled.is_set()
    assert not slots.awaited.is_set()  # drained at once, not after waiting for slots
