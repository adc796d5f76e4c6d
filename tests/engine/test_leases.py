"""Only attempts a worker runs hold leases. A wait step waits in the coordinator and a
workflow step's attempt is a child run: no worker beats for either, and either may
rightly take longer than any lease, when the run is fresh and after another coordinator
takes it up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from contracts.errors import NotFound
from contracts.events import Event, TaskFailed, TaskStarted
from contracts.messages import ResumeRun
from contracts.validation import parse_workflow
from contracts.vocabulary import FailureKind
from engine.client import Client
from engine.coordinator import Coordinator
from engine.runlog.memory import MemoryRunLog
from engine.transport.memory import MemoryTransport
from tests.clock import Clock

FLOW = parse_workflow(
    """
name: leased
tasks:
  - name: gate
    wait: {}
  - name: sub
    workflow:
      spec:
        name: child
        tasks:
          - name: hold
            wait: {}
  - name: work
    script: echo work
  - name: later
    script: echo later
"""
)
"""No worker consumes the task queue here: ``work`` and ``later`` start only when the
test says so, and nothing of theirs ever beats."""

LEASE = 0.05


async def until(store: MemoryRunLog, run_id: str, found: Callable[[Event], bool]) -> None:
    """Until the run's log holds an event ``found`` picks (a submission is appended once
    its coordinator takes it)."""
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(NotFound):
                if any(found(event) for event in await store.read(run_id)):
                    return
            await asyncio.sleep(0.01)


def lost(task: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, TaskFailed) and e.task == task and e.reason == FailureKind.LOST


async def start(coordinator: Coordinator, run_id: str, task: str, clock: Clock) -> None:
    """What a worker reports as it starts ``task`` (and then never beats)."""
    await coordinator.handle_event(TaskStarted(run_id=run_id, at=clock.now, task=task, index=0))


async def test_a_wait_and_a_child_run_outlast_the_lease_fresh_and_after_a_takeover() -> None:
    transport, store, clock = MemoryTransport(), MemoryRunLog(), Clock()
    first = Coordinator(transport, store, heartbeat_timeout=LEASE, clock=clock)
    await first.start()
    run_id = await Client(store, transport).submit(FLOW, {})
    # The child run is under way: its parent's attempt has started.
    await until(store, run_id, lambda e: isinstance(e, TaskStarted) and e.task == "sub")
    await start(first, run_id, "work", clock)
    clock.now += 3600
    await until(store, run_id, lost("work"))  # leases were looked at since

    await start(first, run_id, "later", clock)
    await first.stop()
    second = Coordinator(transport, store, heartbeat_timeout=LEASE, clock=clock)
    await second.start()
    try:
        await second.handle(ResumeRun(run_id=run_id, at=clock.now))
        clock.now += 3600
        # Taken up, every attempt the log says is running got a lease as a grace period:
        # ``later``'s runs out, and the wait's and the child run's would have with it.
        await until(store, run_id, lost("later"))
    finally:
        await second.stop()

    events = await store.read(run_id)
    assert not any(lost("gate")(e) or lost("sub")(e) for e in events)
    assert [e.task for e in events if isinstance(e, TaskFailed)] == ["work", "later"]
