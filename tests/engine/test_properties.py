"""Property: any DAG, any mix of outcomes, any delivery order, always terminates cleanly.

Outcomes include what the engine itself reports: attempts lost (a lease ran out) and
signals to wait steps, alone or in one batch with the loss of the wait's attempt. A run
that ends other than succeeded may be retried as a whole (up to twice), with late
outcomes of the attempts its end cut off still arriving."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.events import (
    Event,
    RetryScheduled,
    RunRetryRequested,
    SignalReceived,
    TaskDispatched,
)
from contracts.validation import workflow_from_data
from contracts.vocabulary import TERMINAL, FailureKind, TaskStatus
from engine.state import fold, replay, snapshot
from tests.engine.sim import Sim
from tests.engine.tallies import kept, read_whole


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=10))
    tasks = []
    for i in range(n):
        task: dict[str, Any] = {"name": f"t{i}", "script": "echo"}
        if draw(st.integers(0, 4)) == 0:
            task = {"name": f"t{i}", "wait": {}}  # released by the signal of its name
        if i:
            deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True))
            if deps:
                task["depends"] = [f"t{d}" for d in deps]
        if draw(st.booleans()):
            task["items"] = list(range(draw(st.integers(0, 4))))
            if draw(st.booleans()):
                task["parallelism"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            task["retry"] = {"limit": draw(st.integers(0, 2)), "backoff": {"delay": 1}}
        if draw(st.integers(0, 4)) == 0:
            task["continue_on_failure"] = True
        if draw(st.integers(0, 4)) == 0:
            task["trigger_rule"] = "all_done"
        if draw(st.integers(0, 5)) == 0:
            task["when"] = draw(st.sampled_from(["True", "False", "params.go"]))
        tasks.append(task)
    return {"name": "prop", "params": {"go": draw(st.booleans())}, "tasks": tasks}


OUTCOMES = ["ok", "ok", "error", "fatal", "timeout", "lost"]
WAIT_OUTCOMES = ["signal", "lost", "signal+lost", "timeout", "signal+timeout"]
"""A wait ends by its signal, its timeout, or its attempt lost; a signal can come in one
batch with either of the others."""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workflows(), data=st.data())
def test_random_dags_always_terminate_with_every_task_final(
    spec: dict[str, Any], data: st.DataObject
) -> None:
    sim = Sim(workflow_from_data(spec))
    inflight: list[tuple[str, int, int]] = []
    timers: list[tuple[str, int, int]] = []
    delivered: list[Event] = []

    def collect() -> None:
        for decision in sim.last_decisions:
            if isinstance(decision, TaskDispatched):
                inflight.append((decision.task, decision.index, decision.attempt))
            elif isinstance(decision, RetryScheduled):
                timers.append((decision.task, decision.index, decision.attempt))

    collect()
    for _step in range(2000):
        if sim.state.finished:
            if sim.state.status == "succeeded" or sim.state.round == 2:
                break
            if not data.draw(st.booleans(), label="retry the run?"):
                break
            sim.tick(1)
            sim.send(RunRetryRequested(run_id=sim.run_id, at=sim.now, round=sim.state.round + 1))
            collect()
            continue
        choices = ["work"] * bool(inflight) + ["timer"] * bool(timers) + ["dup"] * bool(delivered)
        if data.draw(st.integers(0, 30), label="cancel?") == 0:
            sim.cancel()
            collect()
            continue
        assert choices, "the run is stuck: nothing in flight, no timers, not finished"
        action = data.draw(st.sampled_from(choices), label="action")
        if action == "work":
            task, index, attempt = inflight.pop(
                data.draw(st.integers(0, len(inflight) - 1), label="which")
            )
            waits = sim.state.nodes[task].spec.wait is not None
            kinds = WAIT_OUTCOMES if waits else OUTCOMES
            outcome = data.draw(st.sampled_from(kinds), label="outcome")
            sim.tick(0.5)
            position = len(sim.log)
            lost = sim.failure(task, index, attempt, reason=FailureKind.LOST)
            signal = SignalReceived(run_id=sim.run_id, at=sim.now, name=task, key=f"{position}")
            if outcome == "signal":
                sim.send(signal)
            elif outcome == "lost":
                sim.send(lost)
            elif outcome == "signal+lost":
                sim.send_together(signal, lost)
            elif outcome == "signal+timeout":
                sim.send_together(signal, sim.failure(task, index, attempt, reason="timeout"))
            elif outcome == "ok":
                sim.ok(task, index, attempt, result=index)
            else:
                sim.fail(
                    task,
                    index,
                    attempt,
                    reason="timeout" if outcome == "timeout" else "error",
                    retryable=outcome != "fatal",
                )
            delivered.append(sim.log[position])
        elif action == "timer":
            task, index, attempt = timers.pop(
                data.draw(st.integers(0, len(timers) - 1), label="timer")
            )
            sim.tick(2)
            sim.fire(task, index, attempt)
        else:
            # A redelivered message: must change nothing.
            before = len(sim.log)
            sim.send(data.draw(st.sampled_from(delivered), label="dup"))
            assert len(sim.log) == before
            continue
        collect()

    state = sim.state
    assert state.finished, "run did not finish"
    # What comes after the run's end (the outcomes of attempts it cut off, each wait's
    # signal, a redelivery) changes neither its end nor any task's.
    ended = _ends(state)
    late = data.draw(st.permutations(inflight), label="late outcomes")
    for task, index, attempt in late[: data.draw(st.integers(0, len(late)), label="how many")]:
        sim.tick(0.5)
        if state.nodes[task].spec.wait is not None:  # only its timeout or loss comes back
            sim.send(sim.failure(task, index, attempt, reason=FailureKind.LOST))
        elif data.draw(st.booleans(), label="late success?"):
            sim.ok(task, index, attempt, result="late")
        else:
            sim.fail(task, index, attempt, reason="error", retryable=True)
    for name, node in state.nodes.items():
        if node.spec.wait is not None and data.draw(st.booleans(), label="late signal?"):
            sim.send(SignalReceived(run_id=sim.run_id, at=sim.now, name=name, key=f"late-{name}"))
    if delivered:
        sim.send(data.draw(st.sampled_from(delivered), label="late dup"))
    assert _ends(sim.state) == ended
    for node in state.nodes.values():
        assert node.status in TERMINAL, (node.spec.name, node.status)
        for inst in node.instances:
            assert inst.status in TERMINAL
        # A task succeeds at most once per item.
        assert node.done <= len(node.instances)
    if state.status == "succeeded":
        assert all(
            n.status != TaskStatus.FAILED or n.spec.continue_on_failure
            for n in state.nodes.values()
        )
    # A snapshot taken anywhere, plus the events after it, gives the same state.
    cut = data.draw(st.integers(1, len(sim.log)), label="snapshot at")
    resumed = snapshot.load(snapshot.dump(replay(sim.log[:cut])))
    for node in resumed.nodes.values():
        node.tally()  # read here (a snapshot has none): the fold keeps it from now on
    for event in sim.log[cut:]:
        fold(resumed, event)
    assert snapshot.dump(resumed) == snapshot.dump(state)
    for node in [*resumed.nodes.values(), *state.nodes.values()]:
        assert kept(node) == read_whole(node.instances), node.spec.name
    # Replay is exact, and the engine agrees with every decision in the log.
    replayed = replay(sim.log, strict=True)
    assert replayed.status == state.status
    assert {k: v.status for k, v in replayed.nodes.items()} == {
        k: v.status for k, v in state.nodes.items()
    }
    assert [[i.result for i in v.instances] for v in replayed.nodes.values()] == [
        [i.result for i in v.instances] for v in state.nodes.values()
    ]


def _ends(state: Any) -> Any:
    """How a run and each of its tasks and items ended, with their results."""
    return (
        state.status,
        state.reason,
        {
            name: (node.status, [(i.status, i.result) for i in node.instances])
            for name, node in state.nodes.items()
        },
    )
