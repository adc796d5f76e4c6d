"""The worker on its own: what it sends for the task messages it takes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts.codec import decode_coordinator_input, encode, encode_tasks
from contracts.events import Event, TaskFailed, TaskStarted, TaskSucceeded
from contracts.messages import CancelTasks, StepSpec, TaskReady
from contracts.ports import Consumer
from contracts.topology import CONTROL_TOPIC, task_queue
from engine.runlog.memory import MemoryRunLog
from engine.transport.memory import MemoryTransport
from workers.worker import Worker

REPLIES = "replies"


def task(index: int, target: str = "teststeps:add", **args: Any) -> TaskReady:
    return TaskReady(
        run_id="run",
        task="t",
        index=index,
        step=StepSpec(kind="python", target=target, args=args or {"a": index, "b": 1}),
        reply_to=REPLIES,
    )


@pytest.fixture
async def transport() -> AsyncIterator[MemoryTransport]:
    t = MemoryTransport()
    await t.start()
    yield t
    await t.close()


async def replies(consumer: Consumer, count: int) -> tuple[list[Event], int]:
    """The next ``count`` events sent back, and how many messages carried them."""
    events: list[Event] = []
    messages = 0
    async with asyncio.timeout(10):
        async for delivery in consumer:
            messages += 1
            events += [e for e in decode_coordinator_input(delivery.body) if isinstance(e, Event)]
            await delivery.ack()
            if len(events) >= count:
                break
    return events, messages


async def test_a_batch_is_started_in_one_message_and_runs_within_the_slots(
    transport: MemoryTransport,
) -> None:
    back = await transport.consume(REPLIES, prefetch=100)
    async with Worker(transport, MemoryRunLog(), concurrency=2) as worker:
        await transport.publish(task_queue("default"), [encode_tasks([task(i) for i in range(6)])])
        first, messages = await replies(back, 6)
        assert messages == 1, "one TaskStarted message for the whole batch"
        # (Steps start at once, so outcomes of quick ones may follow in the same message.)
        started = first[:6]
        assert [(type(e), e.index) for e in started] == [(TaskStarted, i) for i in range(6)]
        assert {e.worker for e in started if isinstance(e, TaskStarted)} == {worker.name}
        results = first[6:]
        if len(results) < 6:
            more, messages = await replies(back, 6 - len(results))
            results += more
            assert messages <= 6
    assert sorted((e.index, e.result) for e in results if isinstance(e, TaskSucceeded)) == [
        (i, i + 1) for i in range(6)
    ]
    assert transport.pending() == 0, "the batch message was acked"


async def test_queued_attempts_of_a_batch_are_cancelled_and_handed_back(
    transport: MemoryTransport,
) -> None:
    back = await transport.consume(REPLIES, prefetch=100)
    worker = Worker(transport, MemoryRunLog(), concurrency=1)
    await worker.start()
    slow = [task(i, "teststeps:slow", seconds=30) for i in range(3)]
    await transport.publish(task_queue("default"), [encode_tasks(slow)])
    await replies(back, 3)  # all three are started: one runs, two wait for the slot
    other = task(0, "teststeps:slow", seconds=30)
    other = TaskReady(run_id="other", task="t", step=other.step, reply_to=REPLIES)
    await transport.publish(task_queue("default"), [encode(other)])
    await transport.broadcast(CONTROL_TOPIC, encode(CancelTasks(run_id="run", reason="user")))
    # The other run's task is taken once the slot is free (its TaskStarted may share a
    # message with the cancellations).
    events, _ = await replies(back, 4)
    assert sorted((e.index, e.reason) for e in events if isinstance(e, TaskFailed)) == [
        (0, "cancelled"),
        (1, "cancelled"),
        (2, "cancelled"),
    ]
    assert [e.run_id for e in events if isinstance(e, TaskStarted)] == ["other"]
    # Stopping hands back what is still running.
    await worker.stop(grace=0.05)
    (lost,), _ = await replies(back, 1)
    assert isinstance(lost, TaskFailed) and lost.run_id == "other"
    assert (lost.reason, lost.retryable) == ("lost", True)


class SlowReports(MemoryTransport):
    """A broker that is slow to confirm ``TaskStarted`` reports, or refuses some."""

    def __init__(self) -> None:
        super().__init__()
        self.confirm = asyncio.Event()
        self.refuse = 0

    async def publish(self, queue: str, bodies: Any, headers: Any = None) -> None:
        if queue == REPLIES and any(
            isinstance(e, TaskStarted) for body in bodies for e in decode_coordinator_input(body)
        ):
            if self.refuse:
                self.refuse -= 1
                raise ConnectionError("the broker went away")
            await self.confirm.wait()
        await super().publish(queue, bodies, headers)


async def test_a_step_runs_while_its_started_report_waits_for_the_broker() -> None:
    transport = SlowReports()
    await transport.start()
    back = await transport.consume(REPLIES, prefetch=100)
    logs = MemoryRunLog()
    async with Worker(transport, logs, concurrency=1):
        await transport.publish(task_queue("default"), [encode(task(0, "teststeps:chatty", n=1))])
        async with asyncio.timeout(10):
            while not await logs.read_lines("run"):  # the step has printed: it ran
                await asyncio.sleep(0.01)
        assert back.ready(10) == [], "nothing is reported before TaskStarted is confirmed"
        assert transport.pending() == 1, "the task message is not acked before the confirm"
        transport.confirm.set()
        events, _ = await replies(back, 2)
    assert [type(e) for e in events] == [TaskStarted, TaskSucceeded]
    assert transport.pending() == 0
    await transport.close()


async def test_a_started_report_the_broker_refuses_sends_the_message_back_and_stops_the_step() -> (
    None
):
    transport = SlowReports()
    transport.confirm.set()
    transport.refuse = 1
    await transport.start()
    back = await transport.consume(REPLIES, prefetch=100)
    async with Worker(transport, MemoryRunLog(), concurrency=2) as worker:
        await transport.publish(
            task_queue("default"), [encode(task(0, "teststeps:slow", seconds=0.3))]
        )
        events, _ = await replies(back, 2)  # taken again, started and finished
        await worker.stop(grace=5)
    assert [type(e) for e in events] == [TaskStarted, TaskSucceeded]
    # The first run of the step was stopped: it never reported an outcome of its own.
    assert back.ready(10) == []
    assert transport.pending() == 0
    await transport.close()
