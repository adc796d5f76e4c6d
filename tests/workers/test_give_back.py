"""A worker whose slots stay taken gives back the task messages it holds and has not
started, and takes work again once a slot frees. On the in-memory twin and on RabbitMQ
(where the messages given back are a consumer's prefetch)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts.codec import decode_coordinator_input, encode_tasks
from contracts.events import Event, TaskStarted, TaskSucceeded
from contracts.messages import StepSpec, TaskReady
from contracts.ports import Consumer
from contracts.topology import task_queue
from engine.runlog.memory import MemoryRunLog
from engine.transport.memory import MemoryTransport
from workers.intake import GIVE_BACK_BELOW
from workers.worker import Worker


@pytest.fixture
def transport(each_transport: Any) -> Any:
    return each_transport


@pytest.fixture
def names() -> tuple[str, str]:
    """A pool and a reply queue of this test's own, on a broker other tests share."""
    tag = uuid.uuid4().hex[:12]
    return f"giveback-{tag}", f"test.replies.{tag}"


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


async def test_a_full_worker_gives_back_what_it_holds_and_takes_work_again_when_free(
    transport: Any, names: tuple[str, str], tmp_path: Path
) -> None:
    pool, replies = names
    release = tmp_path / "release"
    back = Replies(await transport.consume(replies, prefetch=100))
    busy = Worker(
        transport, MemoryRunLog(), pool=pool, concurrency=1, name="busy", give_back_after=0.3
    )
    await busy.start()
    try:
        await transport.publish(
            task_queue(pool), [message(1, replies, "teststeps:until_exists", path=str(release))]
        )
        started = await back.of(1, TaskStarted)
        assert isinstance(started, TaskStarted) and started.worker == "busy"
        # Its one slot taken, the busy worker is handed this one too (it is the only
        # consumer) and holds it until it gives it back.
        await transport.publish(task_queue(pool), [message(2, replies, "teststeps:add", a=2, b=1)])
        await until_taken(transport, task_queue(pool))
        async with Worker(transport, MemoryRunLog(), pool=pool, concurrency=1, name="idle"):
            taken = await back.of(2, TaskStarted)
            done = await back.of(2, TaskSucceeded)
        assert isinstance(taken, TaskStarted) and taken.worker == "idle"
        assert isinstance(done, TaskSucceeded) and done.result == 3
        assert not release.exists(), "item 2 ran while item 1 held the busy worker's slot"

        release.touch()
        await back.of(1, TaskSucceeded)
        # Free again, the busy worker consumes again and is the only one left to take it.
        await transport.publish(task_queue(pool), [message(3, replies, "teststeps:add", a=3, b=1)])
        again = await back.of(3, TaskStarted)
        assert isinstance(again, TaskStarted) and again.worker == "busy"
        assert (await back.of(3, TaskSucceeded)).result == 4
    finally:
        release.touch()
        await busy.stop(grace=5)


@pytest.mark.parametrize("why", ["told to keep it", "delivered often already"])
async def test_a_full_worker_keeps_what_it_holds_when_it_is_told_to_or_it_came_often(
    why: str, names: tuple[str, str], tmp_path: Path
) -> None:
    """The same start without give-back (as an embedded engine's sole worker), or with
    a message a quorum queue has delivered five times (each return counts toward its
    delivery limit): item 2 stays with the busy worker until its slot frees, and runs
    there."""
    pool, replies = names
    keep = why == "told to keep it"
    headers = {} if keep else {"x-delivery-count": str(GIVE_BACK_BELOW)}
    release = tmp_path / "release"
    transport = MemoryTransport()
    await transport.start()
    back = Replies(await transport.consume(replies, prefetch=100))
    async with Worker(
        transport,
        MemoryRunLog(),
        pool=pool,
        concurrency=1,
        name="busy",
        give_back_after=None if keep else 0.3,
    ):
        await transport.publish(
            task_queue(pool), [message(1, replies, "teststeps:until_exists", path=str(release))]
        )
        await back.of(1, TaskStarted)
        await transport.publish(
            task_queue(pool), [message(2, replies, "teststeps:add", a=2, b=1)], headers
        )
        await until_taken(transport, task_queue(pool))
        async with Worker(transport, MemoryRunLog(), pool=pool, concurrency=1, name="idle"):
            with pytest.raises(TimeoutError):  # the idle worker never sees it
                async with asyncio.timeout(1.0):
                    await back.of(2, TaskStarted)
        release.touch()
        taken = await back.of(2, TaskStarted)
        assert isinstance(taken, TaskStarted) and taken.worker == "busy"
    await transport.close()
