"""The worker on its own: what it sends for the task messages it takes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from contracts.codec import decode_coordinator_input, encode, encode_tasks
from contracts.events import Event, TaskFailed, TaskStarted, TaskSucceeded
from contracts.messages import CancelTasks, StepSpec, TaskReady
from contracts.ports import Consumer
from contracts.topology import CONTROL_TOPIC, task_queue
from contracts.vocabulary import FailureKind
from engine.runlog.memory import MemoryRunLog
from engine.transport.memory import MemoryTransport
from workers.outcomes import HANDED_BACK, Interruption
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


@pytest.fixture
def quick_within_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests of a step that ends within the start hold: a hold long enough that a
    loaded machine cannot make the quick step outlast it (the hold ends when the step
    does, so this costs no time)."""
    monkeypatch.setattr("workers.worker.START_HOLD", 5.0)


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
    steps = [task(i, "teststeps:slow_identity", value=i, seconds=0.2) for i in range(6)]
    async with Worker(transport, MemoryRunLog(), concurrency=2) as worker:
        await transport.publish(task_queue("default"), [encode_tasks(steps)])
        started, messages = await replies(back, 6)
        assert messages == 1, "one TaskStarted message for the whole batch"
        assert [(type(e), e.index) for e in started] == [(TaskStarted, i) for i in range(6)]
        assert {e.worker for e in started if isinstance(e, TaskStarted)} == {worker.name}
        results, _ = await replies(back, 6)
    assert sorted((e.index, e.result) for e in results if isinstance(e, TaskSucceeded)) == [
        (i, i) for i in range(6)
    ]
    assert transport.pending() == 0, "the batch message was acked"


@pytest.mark.usefixtures("quick_within_hold")
async def test_a_quick_step_sends_its_start_with_its_outcome(transport: MemoryTransport) -> None:
    back = await transport.consume(REPLIES, prefetch=100)
    async with Worker(transport, MemoryRunLog(), concurrency=1):
        await transport.publish(task_queue("default"), [encode(task(0))])
        events, messages = await replies(back, 2)
        await until(lambda: transport.pending() == 0, "the task message to be acked")
    assert messages == 1, "one message, one write to the broker's log"
    assert [type(e) for e in events] == [TaskStarted, TaskSucceeded]


async def test_no_outcome_overtakes_its_start(transport: MemoryTransport) -> None:
    """Coroutine steps that end before their message's starts are sent: each outcome
    still comes after its start, in the order the coordinator folds them."""
    back = await transport.consume(REPLIES, prefetch=100)
    quick = [task(i, "teststeps:async_double", x=i) for i in range(4)]
    async with Worker(transport, MemoryRunLog(), concurrency=4):
        await transport.publish(task_queue("default"), [encode_tasks(quick)])
        events, _ = await replies(back, 8)
    for i in range(4):
        kinds = [type(e) for e in events if getattr(e, "index", None) == i]
        assert kinds == [TaskStarted, TaskSucceeded], f"item {i}: {kinds}"


async def test_a_step_that_outlasts_the_hold_is_reported_started_while_it_runs(
    transport: MemoryTransport,
) -> None:
    worker, back = await running(transport, "teststeps:slow", seconds=30)
    await until(lambda: transport.pending() == 0, "the task message to be acked")
    assert worker.busy == 1, "acked while the step still runs"
    await worker.stop(grace=0.05)
    (lost,), _ = await replies(back, 1)
    assert isinstance(lost, TaskFailed) and lost.reason == "lost"


async def running(transport: MemoryTransport, target: str, **args: Any) -> tuple[Worker, Consumer]:
    """A one-slot worker running one step of ``target``, reported started; and the
    consumer of what it sends back."""
    back = await transport.consume(REPLIES, prefetch=100)
    worker = Worker(transport, MemoryRunLog(), concurrency=1)
    await worker.start()
    await transport.publish(task_queue("default"), [encode(task(0, target, **args))])
    (started,), _ = await replies(back, 1)
    assert isinstance(started, TaskStarted)
    return worker, back


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)  # polled: the memory transport acks without a signal


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
    assert sorted((e.index, e.reason, e.error) for e in events if isinstance(e, TaskFailed)) == [
        (0, "cancelled", "cancelled: user"),
        (1, "cancelled", "cancelled: user"),
        (2, "cancelled", "cancelled: user"),
    ]
    # How long each ran: the one in the slot for a while, the two waiting not at all.
    took = {e.index: e.duration for e in events if isinstance(e, TaskFailed)}
    assert took[0] > 0 and took[1] == took[2] == 0
    assert [e.run_id for e in events if isinstance(e, TaskStarted)] == ["other"]
    # Stopping hands back what is still running.
    await worker.stop(grace=0.05)
    (lost,), _ = await replies(back, 1)
    assert isinstance(lost, TaskFailed) and lost.run_id == "other"
    assert (lost.reason, lost.retryable) == ("lost", True)


async def test_hurrying_a_stop_hands_the_running_steps_back_before_the_grace_ends(
    transport: MemoryTransport,
) -> None:
    worker, back = await running(transport, "teststeps:slow", seconds=3600)
    stopping = asyncio.create_task(worker.stop(grace=3600))
    worker.hurry()
    async with asyncio.timeout(10):  # not the hour of its grace period
        await stopping
    (lost,), _ = await replies(back, 1)
    assert isinstance(lost, TaskFailed) and (lost.reason, lost.retryable) == ("lost", True)


async def test_a_step_that_runs_on_past_its_cancel_is_cancelled_again_when_stopping(
    transport: MemoryTransport,
) -> None:
    worker, back = await running(transport, "teststeps:swallows_a_cancel", seconds=3600)
    async with asyncio.timeout(10):  # without the second cancel, this stop never returns
        await worker.stop(grace=0.05)
    (lost,), _ = await replies(back, 1)
    assert isinstance(lost, TaskFailed) and (lost.reason, lost.retryable) == ("lost", True)


async def test_stopping_leaves_behind_a_step_that_never_stops(
    transport: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workers.worker.STOP_LIMIT", 1.0)
    worker, _back = await running(transport, "teststeps:ignores_cancels", seconds=3)
    async with asyncio.timeout(10):
        await worker.stop(grace=0.05)
    # Stopped after grace + STOP_LIMIT and the cancels in between, while the step still
    # runs: its attempt is left to its lease, as a worker that died.
    assert worker.busy == 1


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


@pytest.mark.usefixtures("quick_within_hold")
async def test_an_outcome_refused_with_its_start_reports_the_start_and_the_failure() -> None:
    """As when the start went alone: the outcome could not be sent, so the attempt is
    reported failed, and the failure carries the start."""
    transport = SlowReports()
    transport.confirm.set()
    transport.refuse = 1
    await transport.start()
    back = await transport.consume(REPLIES, prefetch=100)
    async with Worker(transport, MemoryRunLog(), concurrency=1):
        await transport.publish(task_queue("default"), [encode(task(0))])
        (started, failed), messages = await replies(back, 2)
        await until(lambda: transport.pending() == 0, "the task message to be acked")
    assert messages == 1 and isinstance(started, TaskStarted)
    assert isinstance(failed, TaskFailed) and "outcome could not be sent" in failed.error
    await transport.close()


@pytest.mark.usefixtures("quick_within_hold")
async def test_when_neither_outcome_nor_failure_can_carry_the_start_the_message_goes_back() -> None:
    transport = SlowReports()
    transport.confirm.set()
    transport.refuse = 2
    await transport.start()
    back = await transport.consume(REPLIES, prefetch=100)
    async with Worker(transport, MemoryRunLog(), concurrency=1):
        await transport.publish(task_queue("default"), [encode(task(0))])
        events, messages = await replies(back, 2)  # from the step's second run
        await until(lambda: transport.pending() == 0, "the task message to be acked")
    assert (messages, [type(e) for e in events]) == (1, [TaskStarted, TaskSucceeded])
    assert back.ready(10) == []
    await transport.close()


def test_an_interruption_says_cancelled_once() -> None:
    run_over = Interruption(FailureKind.CANCELLED, "the run already succeeded").outcome()
    assert (run_over.error, run_over.retryable) == ("cancelled: the run already succeeded", False)
    by_user = Interruption(FailureKind.CANCELLED, "cancelled by user").outcome()
    assert by_user.error == "cancelled by user"  # not "cancelled: cancelled by user"
    handed_back = HANDED_BACK.outcome()
    assert (handed_back.error, handed_back.retryable) == ("handed back: the worker stopped", True)
