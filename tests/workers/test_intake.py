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
from engine.transport.memory import MemoryTransport
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

    def free_slots(self) -> int:
        return self.free

    def take(self, delivery: Any, tasks: list[TaskReady]) -> None:
        raise AssertionError("not used: the round is driven by the test")


class Drained:
    """A consumer that notes when it is drained."""

    def __init__(self) -> None:
        self.drained = asyncio.Event()
        self.calls = 0

    async def drain(self) -> None:
        self.calls += 1
        self.drained.set()


class Acked:
    body = b""
    headers: dict[str, Any] = {}
    redelivered = False

    def __init__(self) -> None:
        self.settled = False
        self.settleable = True

    async def ack(self) -> None:
        self.settled = True

    async def nack(self, *, requeue: bool) -> None:
        self.settled = True


@pytest.mark.parametrize(
    ("prefetch", "free", "free_at_ack", "drains"),
    [
        (2, 2, 2, False),  # a quick step: its slot is free again when its start is out
        (1, 1, 1, False),  # the same with one slot
        (3, 3, 2, True),  # a step still runs: three more could come to two free slots
        (1, 1, 0, True),  # one slot, taken by a long step: nothing more may come
        (3, 3, -7, True),  # a ten-task batch took every slot and two more may come
    ],
)
async def test_a_message_is_acked_at_once_only_if_what_may_follow_finds_a_slot(
    prefetch: int, free: int, free_at_ack: int, drains: bool
) -> None:
    """A round opened with ``prefetch`` on ``free`` slots takes one message; when it is
    acked ``free_at_ack`` are free. If what the broker may send after the ack would not
    all find a slot, the consumer is drained first."""
    slots, consumer = Slots(free), Drained()
    current = Round(consumer, prefetch, slots)  # type: ignore[arg-type]
    delivered = Acked()
    delivery = current.received(delivered)
    slots.free = free_at_ack
    await asyncio.wait_for(delivery.ack(), 1)
    assert delivered.settled
    assert consumer.drained.is_set() == drains


async def test_once_a_round_is_drained_its_other_messages_are_acked_without_asking_again() -> None:
    slots, consumer = Slots(2), Drained()
    current = Round(consumer, 2, slots)  # type: ignore[arg-type]
    first, second = Acked(), Acked()
    deliveries = [current.received(first), current.received(second)]
    slots.free = 0
    for delivery in deliveries:
        await asyncio.wait_for(delivery.ack(), 1)
    assert first.settled and second.settled and consumer.calls == 1


async def test_what_the_broker_took_back_with_a_lost_channel_no_longer_counts() -> None:
    """After a reconnect the consumer consumes again with the same prefetch, so the
    broker may send that many again: the messages it took back are not counted as still
    held, and a message acked with fewer slots free than may follow drains first."""
    slots, consumer = Slots(2), Drained()
    current = Round(consumer, 2, slots)  # type: ignore[arg-type]
    lost = [Acked(), Acked()]
    for delivery in lost:
        current.received(delivery)
    for delivery in lost:
        delivery.settleable = False  # the connection dropped; the broker has them back
    again = Acked()  # delivered on the restored channel
    taken = current.received(again)
    slots.free = 1  # two more may come after its ack, to one free slot
    await asyncio.wait_for(taken.ack(), 1)
    assert again.settled and consumer.drained.is_set()


class ChannelLost(Watched):
    """The first consumer's channel is gone by the time it would consume again."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.consumers = 0

    async def consume(self, queue: str, *, prefetch: int) -> Consumer:
        self.consumers += 1
        consumer = await super().consume(queue, prefetch=prefetch)
        if self.consumers == 1:

            async def lost(prefetch: int) -> None:
                raise ConnectionError("channel closed")

            consumer.reopen = lost  # type: ignore[method-assign]
        return consumer


async def test_a_worker_whose_channel_is_gone_takes_work_on_a_new_consumer(
    names: tuple[str, str], tmp_path: Path
) -> None:
    pool, replies = names
    transport = MemoryTransport()
    await transport.start()
    back = Replies(await transport.consume(replies, prefetch=100))
    lossy = ChannelLost(transport)
    release = tmp_path / "release"
    async with Worker(lossy, MemoryRunLog(), pool=pool, concurrency=1, name="w"):
        await transport.publish(
            task_queue(pool), [message(1, replies, "teststeps:until_exists", path=str(release))]
        )
        await back.of(1, TaskStarted)  # its one slot taken: the consumer is drained
        release.touch()
        await back.of(1, TaskSucceeded)
        await transport.publish(task_queue(pool), [message(2, replies, "teststeps:add", a=2, b=1)])
        assert (await back.of(2, TaskSucceeded)).result == 3
    assert lossy.consumers == 2 and lossy.handed == [1, 2]
    await transport.close()
