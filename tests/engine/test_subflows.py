"""Workflow steps: a task whose step is another workflow starts a child run per item and
attempt, takes its outputs as the result or its failure as the attempt's, and stops its
children when it ends first. On the in-memory twins and on RabbitMQ with Redis."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from contracts.errors import Conflict
from contracts.events import Event, RunSubmitted, TaskFailed, TaskStarted, TaskSucceeded
from contracts.messages import ResumeRun
from contracts.validation import parse_workflow, resolve_params
from conveyor.embedded import EmbeddedEngine
from engine.client import Client
from engine.coordinator import Coordinator
from engine.retention import Retention, prune
from engine.runlog.memory import MemoryRunLog
from engine.state.model import RunState
from engine.state.subflows import child_run_id
from engine.transport.memory import MemoryTransport

CHILD = """
name: train
params:
  region: {type: str}
  rounds: {type: int, default: 2}
  flag: {type: str, default: ""}
tasks:
  - name: fit
    env: {REGION: "{{ params.region }}", ROUNDS: "{{ params.rounds }}", FLAG: "{{ params.flag }}"}
    script: |
      if [ -n "$FLAG" ] && [ ! -e "$FLAG" ]; then touch "$FLAG"; echo "not yet" >&2; exit 3; fi
      echo "{\\"region\\": \\"$REGION\\", \\"score\\": $ROUNDS}"
  - name: hold
    depends: [fit]
    when: params.region == 'held'
    wait: {}
outputs:
  score: "{{ tasks.fit.outputs.result.score }}"
  region: "{{ tasks.fit.outputs.result.region }}"
"""


def parent(params: str, *, items: str = "params.regions", retry: int = 0) -> Any:
    child = textwrap.indent(textwrap.dedent(CHILD), " " * 8).strip()
    text = f"""
name: all-regions
params:
  regions: {{type: list, default: [north, south, east]}}
  flag: {{type: str, default: ""}}
tasks:
  - name: train
    items: {items}
    retry: {{limit: {retry}, backoff: {{delay: 0.01}}}}
    workflow:
      params: {params}
      spec:
        {child}
  - name: best
    depends: [train]
    command: [echo, "{{{{ max(r['score'] for r in tasks.train.outputs.result) }}}}"]
outputs:
  scores: "{{{{ tasks.train.outputs.result }}}}"
"""
    return parse_workflow(text)


async def run(engine: EmbeddedEngine, workflow: Any, **params: Any) -> RunState:
    return await asyncio.wait_for(engine.run(workflow, resolve_params(workflow, params)), 60)


async def test_each_item_runs_as_a_child_run_whose_outputs_are_its_result(
    engine: EmbeddedEngine,
) -> None:
    seen: list[Event] = []
    engine.coordinator.observe(lambda event, _state: seen.append(event))
    flow = parent('{region: "{{ item }}", rounds: "{{ index + 3 }}"}')
    state = await run(engine, flow)
    assert state.status == "succeeded", state.reason
    assert state.outputs == {
        "scores": [
            {"score": 3, "region": "north"},
            {"score": 4, "region": "south"},
            {"score": 5, "region": "east"},
        ]
    }
    children = [child_run_id(state.run_id, "train", i, 1) for i in range(3)]
    rows = await engine.client.runs(trigger=f"parent:{state.run_id}")
    assert sorted(row.run_id for row in rows) == sorted(children)
    assert {row.workflow for row in rows} == {"train"} and {row.state for row in rows} == {
        "succeeded"
    }
    # Each attempt is started by its child run, which is named as its worker.
    started = [e for e in seen if isinstance(e, TaskStarted) and e.run_id == state.run_id]
    assert sorted(e.worker for e in started if e.task == "train") == sorted(
        f"run {child}" for child in children
    )
    child = await engine.client.state(children[1])
    assert child.params == {"region": "south", "rounds": 4, "flag": ""}
    assert child.parent is not None and child.parent.run_id == state.run_id


async def test_a_child_that_fails_fails_the_attempt_and_a_retry_starts_a_new_child(
    engine: EmbeddedEngine, tmp_path: Path
) -> None:
    flag = tmp_path / "second-time"
    flow = parent('{region: "{{ item }}", flag: "{{ params.flag }}"}', items="['north']", retry=1)
    state = await run(engine, flow, flag=str(flag))
    assert state.status == "succeeded", state.reason
    [first, second] = [child_run_id(state.run_id, "train", 0, n) for n in (1, 2)]
    failed = await engine.client.state(first)
    assert failed.status == "failed" and "exit code 3" in failed.reason
    assert (await engine.client.state(second)).status == "succeeded"
    assert state.nodes["train"].attempts() == [2]

    # Without a retry, the child's failure is the task's, saying which run failed.
    flag.unlink()
    state = await run(
        engine, parent('{region: "x", flag: "{{ params.flag }}"}', items="[1]"), flag=str(flag)
    )
    assert state.status == "failed"
    error = state.nodes["train"].error or ""
    assert f"run {child_run_id(state.run_id, 'train', 0, 1)} failed: failed tasks: fit" in error


async def test_parameters_that_do_not_fit_the_child_fail_the_attempt_saying_which(
    engine: EmbeddedEngine,
) -> None:
    state = await run(engine, parent('{region: "{{ item }}", rounds: "{{ item }}"}'))
    assert state.status == "failed"
    error = state.nodes["train"].error or ""
    assert "cannot render inputs" in error and "rounds" in error
    assert await engine.client.runs(trigger=f"parent:{state.run_id}") == []


async def test_a_parent_that_ends_first_cancels_its_children(engine: EmbeddedEngine) -> None:
    children_started = asyncio.Event()

    def watch(event: Event, state: RunState) -> None:
        if isinstance(event, RunSubmitted) and event.parent is not None:
            children_started.set()

    engine.coordinator.observe(watch)
    flow = parent('{region: "held"}', items="[1]")
    run_id = await engine.submit(flow, resolve_params(flow, {}))
    await asyncio.wait_for(children_started.wait(), 10)
    child = child_run_id(run_id, "train", 0, 1)
    await engine.client.cancel(run_id, "enough")
    ended = await asyncio.wait_for(engine.wait(child), 20)
    assert ended.status == "cancelled"
    assert ended.reason == f"its parent run {run_id} cancelled"
    parent_state = await engine.client.state(run_id)
    assert parent_state.status == "cancelled"


def test_a_child_run_id_is_its_attempts_own() -> None:
    ids = {child_run_id("r", "t", i, a) for i in range(3) for a in (1, 2)}
    assert len(ids) == 6
    assert child_run_id("r", "t", 1, 2) == child_run_id("r", "t", 1, 2)
    assert len(child_run_id("r", "t", 0, 1)) == 32  # a run id like any other


NESTED = """
name: top
tasks:
  - name: middle
    items: [a, b]
    workflow:
      spec:
        name: middle
        tasks:
          - name: leaf
            workflow:
              spec:
                name: leaf
                tasks: [{name: say, command: [echo, hi]}]
"""


async def test_deleting_a_parent_deletes_the_runs_under_it_and_nothing_else(
    engine: EmbeddedEngine, tmp_path: Path
) -> None:
    top = await run(engine, parse_workflow(NESTED))
    assert top.status == "succeeded", top.reason
    middles = [child_run_id(top.run_id, "middle", i, 1) for i in range(2)]
    leaves = [child_run_id(m, "leaf", 0, 1) for m in middles]
    # A retried attempt's failed child goes too.
    flag = tmp_path / "second-time"
    flow = parent('{region: "{{ item }}", flag: "{{ params.flag }}"}', items="['north']", retry=1)
    retried = await run(engine, flow, flag=str(flag))
    other = await run(engine, parse_workflow(NESTED))
    for run_id in (*middles, *leaves):
        assert await engine.store.summary(run_id) is not None

    told: list[str] = []
    assert await engine.client.delete(top.run_id, deleted=lambda row: told.append(row.run_id))
    # Children before their parents: a deletion cut short leaves the parent to find.
    assert told[-1] == top.run_id and set(told) == {top.run_id, *middles, *leaves}
    assert all(
        told.index(leaf) < told.index(middle) for leaf, middle in zip(leaves, middles, strict=True)
    )
    for run_id in told:
        assert await engine.store.summary(run_id) is None

    attempts = [child_run_id(retried.run_id, "train", 0, n) for n in (1, 2)]
    await engine.client.delete(retried.run_id)
    for run_id in (retried.run_id, *attempts):
        assert await engine.store.summary(run_id) is None
    # Another run of the same workflow keeps its own children.
    kept = [child_run_id(other.run_id, "middle", i, 1) for i in range(2)]
    assert all([await engine.store.summary(run_id) is not None for run_id in kept])


async def test_a_parent_with_a_child_still_running_is_not_deleted(
    engine: EmbeddedEngine,
) -> None:
    flow = parent('{region: "{{ item }}"}', items="['north']")
    state = await run(engine, flow)
    child = child_run_id(state.run_id, "train", 0, 1)
    # The child's log taken back to its submission: to the index it is running again.
    submission = (await engine.store.read(child, limit=1))[0]
    await engine.store.delete(child)
    await engine.store.append(child, [submission])
    with pytest.raises(Conflict) as refused:
        await engine.client.delete(state.run_id)
    assert f"run {state.run_id} has a child run still running ({child})" in str(refused.value)
    assert await engine.store.summary(state.run_id) is not None
    assert await engine.store.summary(child) is not None


async def test_pruning_a_parent_prunes_its_children_with_it_counted_once_each(
    engine: EmbeddedEngine,
) -> None:
    top = await run(engine, parse_workflow(NESTED))
    # Only the parent's workflow is past the rule: its children go with it all the same.
    rule = Retention(keep=0, workflow="top")
    gone: list[str] = []
    done = await prune(
        engine.client, rule, time.time() + 1, deleted=lambda r: gone.append(r.run_id)
    )
    assert done.deleted == 5 == len(set(gone)) and gone[-1] == top.run_id
    assert await engine.client.runs() == []


async def test_a_prune_that_finds_a_parent_and_its_children_together_counts_each_once(
    engine: EmbeddedEngine,
) -> None:
    for _ in range(3):
        await run(engine, parse_workflow(NESTED))
    gone: list[str] = []
    # Parents and children come up in the same batches, deleted side by side.
    done = await prune(
        engine.client, Retention(keep=0), time.time() + 1, deleted=lambda r: gone.append(r.run_id)
    )
    assert done.deleted == 15 == len(gone) == len(set(gone))
    assert await engine.client.runs() == []


LONG_PARTS = parse_workflow(
    """
name: long-parts
tasks:
  - name: sub
    workflow:
      spec:
        name: slow-child
        tasks:
          - name: slow
            script: sleep 60
  - name: gate
    wait: {}
"""
)
"""Nothing consumes the task queue here: ``slow`` ends when the test reports it."""


async def test_a_local_run_taken_up_takes_up_its_child_runs_and_keeps_waiting() -> None:
    # A local run's process died with the child run it drove: resumed, the parent takes
    # the child up with it. Its workflow step and its wait keep their first attempts.
    transport, store = MemoryTransport(), MemoryRunLog()  # both outlive the process
    first = Coordinator(transport, store)
    await first.start()
    client = Client(store, transport)
    run_id = await client.submit(LONG_PARTS, {})
    child = child_run_id(run_id, "sub", 0, 1)
    async with asyncio.timeout(10):
        while not (first.holds(run_id) and first.holds(child)):
            await asyncio.sleep(0.01)
    await first.stop()  # the process ends: nothing drives either run now

    second = Coordinator(transport, store)
    await second.start()
    try:
        await second.handle(ResumeRun(run_id=run_id, at=time.time(), steps_lost=True))
        assert second.holds(child)
        for event in (
            TaskStarted(run_id=child, at=time.time(), task="slow"),
            TaskSucceeded(run_id=child, at=time.time(), task="slow", result="done"),
        ):
            await second.handle_event(event)
        await client.signal(run_id, "gate", {"ok": True})
        async with asyncio.timeout(10):
            state = await second.wait(run_id)
    finally:
        await second.stop()
    assert state.status == "succeeded", state.reason
    assert [state.nodes[t].instances[0].attempt for t in ("sub", "gate")] == [1, 1]
    assert not [e for e in await store.read(run_id) if isinstance(e, TaskFailed)]
    assert await store.summary(child_run_id(run_id, "sub", 0, 2)) is None
