"""Who may report on which step: a worker only on the steps a worker runs, a coordinator
only on the rest, and nobody releases a wait but its signal."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from contracts.codec import encode
from contracts.events import Event, TaskDispatched, TaskFailed, TaskStarted, TaskSucceeded
from contracts.signing import SIGNER_HEADER, Role
from contracts.topology import shard_queue
from contracts.validation import parse_workflow
from contracts.vocabulary import FailureKind, RunStatus
from conveyor.embedded import EmbeddedEngine
from engine.state.model import RunState
from engine.state.reporters import refusal
from tests.deadletters import until_dead_lettered
from tests.engine.sim import Sim

STEPS = """
name: kinds
tasks:
  - name: work
    script: echo work
  - name: gate
    wait: {}
  - name: child
    workflow:
      spec:
        name: inner
        tasks:
          - name: a
            script: echo a
"""


def report(kind: type[Event], task: str) -> Event:
    if kind is TaskFailed:
        return TaskFailed(run_id="run1", at=1.0, task=task, error="x", reason=FailureKind.LOST)
    if kind is TaskSucceeded:
        return TaskSucceeded(run_id="run1", at=1.0, task=task, result="made up")
    return TaskStarted(run_id="run1", at=1.0, task=task)


TAKEN = [
    # A worker reports on what it runs; the coordinator fails it when its lease runs out.
    (Role.WORKER, TaskStarted, "work"),
    (Role.WORKER, TaskSucceeded, "work"),
    (Role.WORKER, TaskFailed, "work"),
    (Role.COORDINATOR, TaskFailed, "work"),
    # A wait's timeout is a coordinator's timer, on the wire.
    (Role.COORDINATOR, TaskFailed, "gate"),
    (None, TaskFailed, "gate"),
    # A child run's coordinator tells the parent its start and end.
    (Role.COORDINATOR, TaskStarted, "child"),
    (Role.COORDINATOR, TaskSucceeded, "child"),
    (Role.COORDINATOR, TaskFailed, "child"),
    # Unsigned (one process): only the wait rule holds.
    (None, TaskSucceeded, "work"),
    (None, TaskSucceeded, "child"),
]

REFUSED = [
    (Role.WORKER, TaskSucceeded, "gate", "only its signal releases it"),
    (Role.WORKER, TaskStarted, "gate", "only its signal releases it"),
    (Role.COORDINATOR, TaskSucceeded, "gate", "only its signal releases it"),
    (None, TaskSucceeded, "gate", "only its signal releases it"),
    (Role.WORKER, TaskSucceeded, "child", "no worker runs it"),
    (Role.WORKER, TaskFailed, "child", "no worker runs it"),
    (Role.WORKER, TaskFailed, "gate", "no worker runs it"),
    (Role.COORDINATOR, TaskSucceeded, "work", "a worker runs it"),
    (Role.COORDINATOR, TaskStarted, "work", "a worker runs it"),
]


@pytest.mark.parametrize(("sender", "kind", "task"), TAKEN)
def test_who_reports_on_what_they_run_is_heard(
    sender: Role | None, kind: type[Event], task: str
) -> None:
    assert refusal(Sim(STEPS).state, report(kind, task), sender) is None


@pytest.mark.parametrize(("sender", "kind", "task", "why"), REFUSED)
def test_a_report_on_a_step_the_sender_does_not_run_is_refused(
    sender: Role | None, kind: type[Event], task: str, why: str
) -> None:
    reason = refusal(Sim(STEPS).state, report(kind, task), sender)
    assert reason is not None and why in reason and repr(task) in reason


GATED = """
name: gated
tasks:
  - name: gate
    wait: {}
  - name: after
    depends: [gate]
    script: echo after
"""


async def test_a_worker_s_success_of_a_wait_is_dead_lettered_and_the_wait_goes_on(
    engine: EmbeddedEngine,
) -> None:
    waiting = asyncio.Event()

    def watch(event: Event, _state: RunState) -> None:
        if isinstance(event, TaskDispatched) and event.task == "gate":
            waiting.set()

    engine.coordinator.observe(watch)
    run_id = await engine.submit(parse_workflow(textwrap.dedent(GATED)), {})
    await asyncio.wait_for(waiting.wait(), 20)
    shard = shard_queue((await engine.client.state(run_id)).shard or 0)
    as_worker = {SIGNER_HEADER: str(Role.WORKER)}
    # While the run is held (the batched path), and after it was dropped from memory
    # (the path that rebuilds it from its log first).
    forged = [
        TaskSucceeded(run_id=run_id, at=1.0, task="gate", attempt=1, result=n) for n in (1, 2)
    ]
    await engine.transport.publish(shard, [encode(forged[0])], headers=as_worker)
    await until_dead_lettered(engine.transport, encode(forged[0]), timeout=20)
    engine.coordinator.forget_all()
    await engine.transport.publish(shard, [encode(forged[1])], headers=as_worker)
    await until_dead_lettered(engine.transport, encode(forged[1]), timeout=20)

    state = await engine.client.state(run_id)
    assert state.nodes["gate"].status == "running"
    assert state.nodes["after"].status == "pending"
    assert not any(e.kind == "task_succeeded" for e in await engine.client.events(run_id))
    await engine.client.signal(run_id, "gate", "approved")
    final = await engine.client.watch(run_id, timeout=20)
    assert final.status == RunStatus.SUCCEEDED
    assert final.nodes["gate"].outputs()["result"] == "approved"
