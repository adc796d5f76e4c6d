"""A coordinator taking up a run another left sends again only the task messages that
may never have gone out. Each message sent twice is a step run twice (its outcome is
recorded once, its effects happen twice): sending again every task dispatched and not
yet started would run hundreds of a fan-out's slow steps twice after a coordinator died.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence

from contracts.codec import decode_tasks
from contracts.errors import ConveyorError
from contracts.events import (
    Event,
    RunSubmitted,
    TaskDispatched,
    TaskExpanded,
    TaskStarted,
    TaskSucceeded,
)
from contracts.messages import ResumeRun
from contracts.topology import task_queue
from contracts.validation import parse_workflow
from engine.client import Client
from engine.coordinator import Coordinator
from engine.recovery import dispatched_again, last_dispatches
from engine.runlog.memory import MemoryRunLog
from engine.state.fold import fold, new_state
from engine.transport.memory import MemoryTransport
from tests.engine.sim import Sim

FANOUT = parse_workflow(
    """
name: two-at-a-time
tasks:
  - name: each
    items: range(4)
    parallelism: 2
    command: [echo, "{{ item }}"]
"""
)


def dispatched(task: str, index: int, attempt: int = 1) -> TaskDispatched:
    return TaskDispatched(run_id="r", at=1.0, task=task, index=index, attempt=attempt)


def test_the_dispatches_that_may_not_have_gone_out_are_those_after_the_last_input() -> None:
    state = Sim("name: r\ntasks: [{name: a, items: [0, 1, 2], script: echo}]").state
    started = TaskStarted(run_id="r", at=1.0, task="a", index=0)
    log: list[Event] = [dispatched("a", 0), dispatched("a", 1), started, dispatched("a", 2)]
    assert last_dispatches(log, state) == {("a", 2, 1)}
    assert last_dispatches(log[:2], state) == {("a", 0, 1), ("a", 1, 1)}
    assert last_dispatches(log[:3], state) == set()
    assert last_dispatches([], state) == set()  # all of it in a snapshot, saved once sent


def test_a_wait_released_after_a_dispatch_in_the_same_decisions_does_not_hide_it() -> None:
    # A signal came before: the wait is released in the pass after its dispatch, and
    # the dispatch of ``a`` beside it may not have gone out either.
    sim = Sim("name: r\ntasks: [{name: a, script: echo}, {name: w, wait: {}}]")
    release = TaskSucceeded(run_id=sim.run_id, at=1.0, task="w", result=None)
    started = TaskStarted(run_id=sim.run_id, at=1.0, task="a")
    log: list[Event] = [started, dispatched("a", 0), dispatched("w", 0), release]
    assert last_dispatches(log, sim.state) == {("a", 0, 1), ("w", 0, 1)}


def test_only_attempts_still_dispatched_are_sent_again() -> None:
    submitted = RunSubmitted(run_id="r", at=1.0, workflow=FANOUT.model_dump(), params={})
    state = new_state(submitted)
    for event in (
        TaskExpanded(run_id="r", at=1.0, task="each", index=-1, count=4),
        dispatched("each", 0),
        dispatched("each", 1),
        TaskStarted(run_id="r", at=2.0, task="each", index=1),
    ):
        fold(state, event)
    asked = {("each", 0, 1), ("each", 1, 1), ("each", 0, 2), ("gone", 0, 1), ("each", 9, 1)}
    again = dispatched_again(state, asked)  # item 1 started; the rest not dispatched
    assert [(e.task, e.index, e.attempt) for e in again] == [("each", 0, 1)]
    assert dispatched_again(state, None) == again


async def queued(transport: MemoryTransport) -> Counter[tuple[int, int]]:
    """The task messages waiting in the default pool's queue, by (item, attempt)."""
    consumer = await transport.consume(task_queue("default"), prefetch=100)
    found: Counter[tuple[int, int]] = Counter()
    for delivery in consumer.ready(100):
        for task in decode_tasks(delivery.body):
            found[(task.index, task.attempt)] += 1
    await consumer.close()  # unsettled: back to the queue
    return found


async def test_a_coordinator_taking_up_a_run_sends_again_only_its_last_dispatches() -> None:
    transport, store = MemoryTransport(), MemoryRunLog()  # the broker outlives coordinators
    first = Coordinator(transport, store)
    await first.start()
    run_id = await Client(store, transport).submit(FANOUT, {})
    async with asyncio.timeout(10):
        while (await transport.queue_depth(task_queue("default"))) != 2:
            await asyncio.sleep(0.01)  # the dispatch of items 0 and 1
    # Item 0 runs (as a worker would report it); item 2 is dispatched in its place.
    for event in (
        TaskStarted(run_id=run_id, at=time.time(), task="each", index=0),
        TaskSucceeded(run_id=run_id, at=time.time(), task="each", index=0, result="0"),
    ):
        await first.handle_event(event)
    await first.stop()  # dies: was item 2's message sent? the log cannot tell
    # Nothing consumes the task queue here: each message sent is still in it.
    assert await queued(transport) == {(0, 1): 1, (1, 1): 1, (2, 1): 1}

    second = Coordinator(transport, store)
    await second.start()
    try:
        await second.handle(ResumeRun(run_id=run_id, at=time.time()))
        after = await queued(transport)
    finally:
        await second.stop()
    # Item 1 was dispatched before an event the first coordinator took afterwards: its
    # message had gone out. Item 2's, the last decision in the log, is sent again;
    # item 0 has run.
    assert after == {(0, 1): 1, (1, 1): 1, (2, 1): 2}


class StallingRunLog(MemoryRunLog):
    """A run log whose next append fails and whose loads wait until let through."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next_append = False
        self.fail_next_load = False
        self.loading = asyncio.Event()
        self.let_load = asyncio.Event()
        self.let_load.set()

    async def append(
        self, run_id: str, events: Sequence[Event], *, then: Sequence[Event] = ()
    ) -> list[bool]:
        if self.fail_next_append:
            self.fail_next_append = False
            raise ConnectionError("the log's answer was lost")
        return await super().append(run_id, events, then=then)

    async def load(self, run_id: str) -> tuple[bytes | None, list[Event]]:
        self.loading.set()
        await self.let_load.wait()
        if self.fail_next_load:
            self.fail_next_load = False
            raise ConveyorError("the log could not be read")
        return await super().load(run_id)


async def submitted_and_held(
    coordinator: Coordinator, store: MemoryRunLog, transport: MemoryTransport
) -> str:
    """A new run of ``FANOUT``, once ``coordinator`` holds it."""
    run_id = await Client(store, transport).submit(FANOUT, {})
    async with asyncio.timeout(10):
        while not coordinator.holds(run_id):
            await asyncio.sleep(0.01)
    return run_id


async def test_a_run_rebuilt_after_a_failed_batch_is_driven_here_throughout() -> None:
    """While a run's state is rebuilt from its log it is not held, but it is still this
    coordinator's: an engine beside it asking whether to take it up must hear so."""
    transport, store = MemoryTransport(), StallingRunLog()
    coordinator = Coordinator(transport, store)
    await coordinator.start()
    try:
        run_id = await submitted_and_held(coordinator, store, transport)
        assert coordinator.drives(run_id)
        store.loading, store.let_load = asyncio.Event(), asyncio.Event()
        store.fail_next_append = True
        started = TaskStarted(run_id=run_id, at=time.time(), task="each", index=0)
        handling = asyncio.create_task(coordinator.handle_group([started]))
        async with asyncio.timeout(10):
            await store.loading.wait()  # the batch failed: its state dropped, being rebuilt
        assert not coordinator.holds(run_id)
        assert coordinator.drives(run_id)
        store.let_load.set()
        async with asyncio.timeout(10):
            assert await handling is False  # its events go one by one after this
        assert coordinator.holds(run_id) and coordinator.drives(run_id)
        assert not coordinator.drives("another-run")
    finally:
        await coordinator.stop()


async def test_a_run_whose_rebuild_fails_after_a_failed_batch_is_left_to_the_one_by_one_path() -> (
    None
):
    """A batch fails, and so does rebuilding its run: the batch's events go one by one
    (which settle or dead-letter each), and the shard's loop is not ended by it."""
    transport, store = MemoryTransport(), StallingRunLog()
    coordinator = Coordinator(transport, store)
    await coordinator.start()
    try:
        run_id = await submitted_and_held(coordinator, store, transport)
        store.fail_next_append = store.fail_next_load = True
        started = TaskStarted(run_id=run_id, at=time.time(), task="each", index=0)
        async with asyncio.timeout(10):
            assert await coordinator.handle_group([started]) is False
        assert not coordinator.holds(run_id)
        await coordinator.handle_event(started)  # the one-by-one path
        assert coordinator.holds(run_id)
        assert any(isinstance(e, TaskStarted) for e in await store.read(run_id))
    finally:
        await coordinator.stop()


async def test_a_second_resume_of_a_run_taken_up_with_its_steps_lost_sends_nothing_again() -> None:
    """Two resumes of a local run at once (two terminals): the first takes it up and
    sends its dispatched steps again; the second finds the run taken up here, and the
    steps it would send again are this process's own."""
    transport, store = MemoryTransport(), MemoryRunLog()
    first = Coordinator(transport, store)
    await first.start()
    run_id = await submitted_and_held(first, store, transport)
    async with asyncio.timeout(10):
        while (await transport.queue_depth(task_queue("default"))) != 2:
            await asyncio.sleep(0.01)  # the dispatch of items 0 and 1
    await first.stop()

    second = Coordinator(transport, store)
    await second.start()
    try:
        await second.handle(ResumeRun(run_id=run_id, at=time.time(), steps_lost=True))
        assert await queued(transport) == {(0, 1): 2, (1, 1): 2}  # its queues were lost
        await second.handle(ResumeRun(run_id=run_id, at=time.time(), steps_lost=True))
        assert await queued(transport) == {(0, 1): 2, (1, 1): 2}
    finally:
        await second.stop()
