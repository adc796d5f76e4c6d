"""Wait steps: a run waits for a signal without holding a worker slot, takes the
signal's data as the step's result, fails at its timeout, and keeps an early signal."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from contracts.errors import ConveyorError, InvalidInput
from contracts.events import (
    Event,
    SignalReceived,
    TaskDispatched,
    TaskEvent,
    TaskFailed,
    TaskSucceeded,
)
from contracts.validation import parse_workflow, resolve_params
from contracts.vocabulary import FailureKind, RunStatus
from conveyor.embedded import EmbeddedEngine
from engine.state import settle
from engine.state.model import RunState
from engine.state.replay import replay
from tests.engine.sim import Sim

APPROVAL = """
name: release
tasks:
  - name: build
    script: echo built
  - name: approval
    depends: [build]
    wait: {}
    timeout: TIMEOUT
  - name: ship
    depends: [approval]
    env: {BY: "{{ tasks.approval.outputs.result.by }}"}
    script: echo "shipped, approved by $BY"
  - name: meanwhile
    script: echo still running
"""


async def start(engine: EmbeddedEngine, timeout: str = "30s") -> tuple[str, asyncio.Event]:
    workflow = parse_workflow(textwrap.dedent(APPROVAL.replace("TIMEOUT", timeout)))
    waiting = asyncio.Event()

    def watch(event: Event, _state: RunState) -> None:
        if isinstance(event, TaskDispatched) and event.task == "approval":
            waiting.set()

    engine.coordinator.observe(watch)
    run_id = await engine.submit(workflow, resolve_params(workflow, {}))
    return run_id, waiting


async def test_a_signal_releases_the_wait_and_its_data_is_the_result(
    engine: EmbeddedEngine,
) -> None:
    run_id, waiting = await start(engine)
    await asyncio.wait_for(waiting.wait(), 10)
    # Waiting holds no worker slot: the other branch runs to the end meanwhile.
    state = await engine.client.state(run_id)
    assert state.nodes["approval"].status == "running"
    with pytest.raises(InvalidInput, match="waits for no signal 'nope'"):
        await engine.client.signal(run_id, "nope")
    await engine.client.signal(run_id, "approval", {"by": "ada"}, key="k1")
    await engine.client.signal(run_id, "approval", {"by": "ada"}, key="k1")  # the same, again
    final = await engine.client.watch(run_id, timeout=20)
    assert final.status == RunStatus.SUCCEEDED
    assert final.nodes["approval"].outputs()["result"] == {"by": "ada"}
    assert final.nodes["ship"].outputs()["result"] == "shipped, approved by ada"
    events = await engine.client.events(run_id)
    assert sum(e.kind == "signal_received" for e in events) == 1
    assert replay(events).nodes["approval"].status == "succeeded"


async def test_a_wait_fails_at_its_timeout(engine: EmbeddedEngine) -> None:
    run_id, _ = await start(engine, timeout="300ms")
    final = await engine.client.watch(run_id, timeout=20)
    assert final.status == RunStatus.FAILED
    inst = final.nodes["approval"].instances[0]
    assert inst.reason == "timeout" and "no signal 'approval' within 0.3s" in (inst.error or "")
    assert final.nodes["ship"].status == "skipped"
    assert final.nodes["meanwhile"].status == "succeeded"


async def test_a_signal_that_comes_before_the_wait_is_kept(engine: EmbeddedEngine) -> None:
    text = """
    name: early
    tasks:
      - name: slow
        script: sleep 0.3
      - name: gate
        depends: [slow]
        wait: {signal: go}
    """
    workflow = parse_workflow(textwrap.dedent(text))
    run_id = await engine.submit(workflow, {})
    for _ in range(100):
        try:
            await engine.client.signal(run_id, "go", 7)
            break
        except Exception:  # not recorded yet
            await asyncio.sleep(0.02)
    final = await engine.client.watch(run_id, timeout=20)
    assert final.status == RunStatus.SUCCEEDED
    assert final.nodes["gate"].outputs()["result"] == 7


def test_wait_steps_check_their_signal_name() -> None:
    with pytest.raises(InvalidInput, match="signal"):
        parse_workflow("name: w\ntasks: [{name: a, wait: {signal: 'not a name'}}]")


def test_a_signal_that_arrives_with_its_wait_s_lost_attempt_is_kept_for_the_next() -> None:
    # Together in one batch: the wait is released and its attempt fails (lost). The
    # release must not be decided again and again for an attempt no longer waiting.
    sim = Sim(APPROVAL.replace("TIMEOUT", "1h"))
    sim.started("build")
    sim.ok("build")
    assert ("approval", 0, 1) in sim.dispatched()
    signal = SignalReceived(
        run_id=sim.run_id, at=sim.now, name="approval", data={"by": "ann"}, key="k"
    )
    lost = TaskFailed(
        run_id=sim.run_id, at=sim.now, task="approval", error="gone", reason=FailureKind.LOST
    )
    decided = sim.send_together(signal, lost)
    assert [(e.kind, e.task, e.attempt) for e in decided if isinstance(e, TaskEvent)] == [
        ("retry_scheduled", "approval", 2)
    ]
    sim.fire("approval", attempt=2)
    assert ("approval", 0, 2) in sim.dispatched()
    [released] = [e for e in sim.last_decisions if isinstance(e, TaskSucceeded)]
    assert (released.attempt, released.result) == (2, {"by": "ann"})
    assert ("ship", 0, 1) in sim.dispatched()


def test_a_state_that_never_settles_fails_its_handling_saying_what_repeats() -> None:
    # A fault in the core (a wait released again and again for an attempt that no
    # longer waits, as before the fix above) must fail the run's handling, not spin.
    sim = Sim(APPROVAL.replace("TIMEOUT", "1h"))
    sim.started("build")
    sim.ok("build")
    sim.fail("approval", reason=FailureKind.LOST)
    sim.state.signals["approval"] = {"by": "ann"}
    sim.state.signal_due[("approval", 0)] = None  # the fault, made by hand
    with pytest.raises(ConveyorError, match=r"do not settle.*approval/0/1/task_succeeded"):
        settle(sim.state)
