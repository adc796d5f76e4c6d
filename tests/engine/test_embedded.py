"""The whole engine in one process: coordinator, workers, in-memory transport, real steps."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from contracts.codec import encode
from contracts.events import Event, TaskStarted, TaskSucceeded
from contracts.topology import shard_of, shard_queue, task_queue
from contracts.validation import parse_workflow, resolve_params
from conveyor.embedded import EmbeddedEngine
from engine.effects import batch_size
from engine.intake import POISON_LIMIT
from engine.state.model import RunState
from tests.deadletters import until_dead_lettered
from tests.engine.draining import shard_drained
from workers.executors.spawning import MAX_ARG_STRLEN


async def run(engine: EmbeddedEngine, text: str, **params: Any) -> RunState:
    workflow = parse_workflow(textwrap.dedent(text))
    async with asyncio.timeout(30):
        return await engine.run(workflow, resolve_params(workflow, params))


def started_event(engine: EmbeddedEngine, task: str) -> asyncio.Event:
    seen = asyncio.Event()

    def watch(event: Event, _state: RunState) -> None:
        if isinstance(event, TaskStarted) and event.task == task:
            seen.set()

    engine.coordinator.observe(watch)
    return seen


async def test_outputs_flow_between_script_command_and_python_steps(engine: EmbeddedEngine) -> None:
    state = await run(
        engine,
        """
        name: flow
        params: {n: 4}
        tasks:
          - name: numbers
            env: {N: "{{ params.n }}"}
            script:
              interpreter: python
              source: "import json, os; print(json.dumps(list(range(int(os.environ['N'])))))"
          - name: square
            depends: [numbers]
            items: tasks.numbers.outputs.result
            command: [python3, -c, "import sys; print(int(sys.argv[1]) ** 2)", "{{ item }}"]
          - name: total
            depends: [square]
            python: teststeps:total
            args: {values: "{{ tasks.square.outputs.result }}"}
        """,
    )
    assert state.status == "succeeded"
    assert state.nodes["square"].outputs()["result"] == [0, 1, 4, 9]
    assert state.nodes["total"].outputs()["result"] == 14


async def test_flaky_step_is_retried_and_each_attempt_keeps_its_log(engine: EmbeddedEngine) -> None:
    state = await run(
        engine,
        """
        name: flaky
        tasks:
          - name: f
            retry: {limit: 2, backoff: {delay: 10ms}}
            script: |
              echo "attempt $CONVEYOR_ATTEMPT"
              [ "$CONVEYOR_ATTEMPT" -ge 3 ] || exit 1
        """,
    )
    assert state.status == "succeeded"
    assert state.nodes["f"].instances[0].attempt == 3
    lines = await engine.store.read_lines(state.run_id, "f")
    stdout = [(line.attempt, line.text) for line in lines if line.stream == "stdout"]
    assert stdout == [(1, "attempt 1"), (2, "attempt 2"), (3, "attempt 3")]


async def test_task_timeout_kills_and_retries_per_policy(
    engine: EmbeddedEngine, tmp_path: Path
) -> None:
    state = await run(
        engine,
        f"""
        name: slow
        tasks:
          - name: s
            timeout: 300ms
            retry: {{limit: 1, backoff: {{delay: 10ms}}, on: [timeout]}}
            script: |
              sleep 30 &
              echo $! >> {tmp_path}/pids
              wait
        """,
    )
    assert state.status == "failed"
    inst = state.nodes["s"].instances[0]
    assert inst.attempt == 2 and inst.reason == "timeout"
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_run_timeout_fails_the_run_and_stops_its_steps(
    engine: EmbeddedEngine, tmp_path: Path
) -> None:
    state = await run(
        engine,
        f"""
        name: late
        timeout: 500ms
        tasks:
          - name: s
            script: echo $$ > {tmp_path}/pid; exec sleep 30
          - name: after
            depends: [s]
            script: echo never
        """,
    )
    assert state.status == "failed" and "timed out" in state.reason
    assert state.nodes["after"].status == "cancelled"
    pid = int((tmp_path / "pid").read_text())
    if psutil.pid_exists(pid):  # the cancel broadcast kills it; waiting bounds the check
        await asyncio.to_thread(psutil.Process(pid).wait, 5)


async def test_cancel_stops_running_steps(engine: EmbeddedEngine, tmp_path: Path) -> None:
    workflow = parse_workflow(
        textwrap.dedent(
            f"""
            name: cancel-me
            tasks:
              - name: s
                script: echo $$ > {tmp_path}/pid; exec sleep 30
            """
        )
    )
    running = started_event(engine, "s")
    run_id = await engine.submit(workflow, {})
    await asyncio.wait_for(running.wait(), 10)
    async with asyncio.timeout(10):
        while not (tmp_path / "pid").exists():  # the step's process is up once it wrote this
            await asyncio.sleep(0.01)
    await engine.client.cancel(run_id)
    async with asyncio.timeout(2):
        state = await engine.coordinator.wait(run_id)
        pid = int((tmp_path / "pid").read_text())
        with contextlib.suppress(psutil.NoSuchProcess):  # it may be gone already
            await asyncio.to_thread(psutil.Process(pid).wait, 2)
    assert state.status == "cancelled"


async def test_fan_out_never_exceeds_its_parallelism(engine: EmbeddedEngine) -> None:
    running: set[int] = set()
    peak = 0

    def watch(event: Event, _state: RunState) -> None:
        nonlocal peak
        if getattr(event, "task", None) != "m":
            return
        if isinstance(event, TaskStarted):
            running.add(event.index)
            peak = max(peak, len(running))
        elif isinstance(event, TaskSucceeded):
            running.discard(event.index)

    engine.coordinator.observe(watch)
    state = await run(
        engine,
        """
        name: capped
        tasks:
          - name: m
            items: [1, 2, 3, 4, 5, 6, 7, 8]
            parallelism: 2
            python: teststeps:slow
            args: {seconds: 0.02}
        """,
    )
    assert state.status == "succeeded"
    assert peak == 2


async def test_steps_that_cannot_start_fail_with_the_reason_in_their_log(
    engine: EmbeddedEngine,
) -> None:
    state = await run(
        engine,
        """
        name: broken
        tasks:
          - name: imp
            python: no_such_module_abc:run
          - name: cmd
            command: [definitely-not-a-program]
        """,
    )
    assert state.status == "failed"
    assert state.nodes["imp"].instances[0].reason == "start"
    logs = await engine.store.read_lines(state.run_id, "imp")
    assert any("cannot import 'no_such_module_abc'" in line.text for line in logs)
    cmd_logs = await engine.store.read_lines(state.run_id, "cmd")
    assert any("not found" in line.text for line in cmd_logs)


async def test_a_variable_too_large_for_the_system_fails_once_saying_which(
    engine: EmbeddedEngine,
) -> None:
    state = await run(
        engine,
        """
        name: huge
        params: {value: {type: str}}
        tasks:
          - name: echo
            env: {TEXT: "{{ params.value }}"}
            retry: {limit: 3}
            script: echo "$TEXT"
        """,
        value="x" * 200_000,
    )
    assert state.status == "failed"
    [instance] = state.nodes["echo"].instances
    assert (instance.attempt, instance.reason) == (1, "start")  # the same values would fail again
    said = f"variable TEXT is 200,006 bytes, over the {MAX_ARG_STRLEN:,} the system"
    assert said in (instance.error or "")
    logs = await engine.store.read_lines(state.run_id, "echo")
    assert any("pass large values as files" in line.text for line in logs)


async def test_inputs_that_cannot_be_rendered_fail_the_instance(engine: EmbeddedEngine) -> None:
    state = await run(
        engine,
        """
        name: render
        tasks:
          - name: m
            items: [{a: 1}, {b: 2}]
            command: [echo, "{{ item['a'] }}"]
        """,
    )
    assert state.status == "failed"
    first, second = state.nodes["m"].instances
    assert first.status == "succeeded" and second.status == "failed"
    assert second.reason == "expression" and "cannot render inputs" in (second.error or "")


async def test_same_idempotency_key_gives_one_run(engine: EmbeddedEngine) -> None:
    workflow = parse_workflow("name: once\ntasks:\n  - name: a\n    script: echo hi\n")
    first = await engine.submit(workflow, {}, idempotency_key="order-42")
    second = await engine.submit(workflow, {}, idempotency_key="order-42")
    assert first == second
    await asyncio.wait_for(engine.coordinator.wait(first), 10)
    assert [r.run_id for r in await engine.store.runs()] == [first]
    events = await engine.store.read(first)
    assert sum(1 for e in events if e.kind == "run_submitted") == 1


async def test_a_redelivered_result_has_no_second_effect(engine: EmbeddedEngine) -> None:
    state = await run(engine, "name: dup\ntasks:\n  - name: a\n    script: echo 1\n")
    before = await engine.store.read(state.run_id)
    result = next(e for e in before if isinstance(e, TaskSucceeded))
    await engine.transport.publish(
        shard_queue(shard_of(state.run_id, (await engine.client.shard_map()).count)),
        [encode(result)],
    )
    await shard_drained(engine, state.run_id)
    assert await engine.store.read(state.run_id) == before


DEEP = (
    b'{"type":"task_succeeded","run_id":"r","at":1,"task":"a","result":'
    + b"[" * 5000
    + b"]" * 5000
    + b"}"
)


@pytest.mark.parametrize("poison", [b"\x00garbage", DEEP], ids=["garbage", "nested-5000-deep"])
async def test_undecodable_messages_are_dead_lettered_not_fatal(
    engine: EmbeddedEngine, poison: bytes
) -> None:
    for shard in range((await engine.client.shard_map()).count):
        await engine.transport.publish(shard_queue(shard), [poison])
    # Every shard still takes runs: no consumer died on the message.
    shards = (await engine.client.shard_map()).count
    keys = {}
    for n in range(100):
        run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:alive-{n}").hex
        keys.setdefault(shard_of(run_id, shards), f"alive-{n}")
    assert len(keys) == shards
    workflow = parse_workflow("name: still-alive\ntasks:\n  - name: a\n    script: echo ok\n")
    for key in keys.values():
        run_id = await engine.submit(workflow, {}, idempotency_key=key)
        state = await asyncio.wait_for(engine.coordinator.wait(run_id), 30)
        assert state.status == "succeeded"
    await until_dead_lettered(engine.transport, poison)


async def test_a_message_that_keeps_failing_is_dead_lettered(
    engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_handle = engine.coordinator.handle
    attempts = 0

    async def flaky_handle(event: Event, shard: int | None = None, sender: Any = None) -> None:
        nonlocal attempts
        if event.run_id == "poison":
            attempts += 1
            raise RuntimeError("cannot handle this one")
        await real_handle(event, shard, sender)

    monkeypatch.setattr(engine.coordinator, "handle", flaky_handle)
    poison = TaskStarted(run_id="poison", at=1.0, task="x")
    await engine.transport.publish(
        shard_queue(shard_of("poison", (await engine.client.shard_map()).count)),
        [encode(poison)],
    )
    state = await run(engine, "name: alive\ntasks:\n  - name: a\n    script: echo ok\n")
    assert state.status == "succeeded"
    await until_dead_lettered(engine.transport, encode(poison))
    # The in-memory twin counts failed handlings itself; a quorum queue counts deliveries
    # (a first one, then up to its limit more), and keeps counting across restarts.
    limit = getattr(engine.transport, "delivery_limit", None)
    assert attempts == (limit + 1 if limit else POISON_LIMIT)


async def test_a_big_fan_out_travels_in_batches_and_a_small_one_does_not(
    engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: dict[str, int] = {}
    real_publish = engine.transport.publish

    async def counting(queue: str, bodies: Any, headers: Any = None) -> None:
        sent[queue] = sent.get(queue, 0) + len(bodies)
        await real_publish(queue, bodies, headers)

    monkeypatch.setattr(engine.transport, "publish", counting)
    fan_out = """
        name: fan-{n}
        tasks:
          - name: each
            items: "{{{{ [i for i in range({n})] }}}}"
            python: teststeps:add
            args: {{a: "{{{{ item }}}}", b: 1}}
          - name: total
            depends: [each]
            python: teststeps:total
            args: {{values: "{{{{ tasks.each.outputs.result }}}}"}}
        """
    state = await run(engine, fan_out.format(n=300))
    assert state.status == "succeeded", state.reason
    assert state.nodes["total"].instances[0].result == sum(range(1, 301))
    events = await engine.store.read(state.run_id)
    started = [(e.task, e.index) for e in events if isinstance(e, TaskStarted)]
    assert sorted(started) == sorted({*started}) and len(started) == 301, "each ran once"
    batched = sent.pop(task_queue("default"))
    assert batched <= 301 // 8, f"{batched} task messages for 301 tasks"
    assert sum(sent.values()) < 2 * 301 // 3, "started and results were coalesced"

    sent.clear()
    state = await run(engine, fan_out.format(n=8))
    assert state.status == "succeeded", state.reason
    assert sent[task_queue("default")] == 9, "few ready tasks go one per message"


def test_ready_tasks_are_batched_only_when_there_are_many() -> None:
    assert [batch_size(n) for n in (1, 8, 63)] == [1, 1, 1]
    assert batch_size(64) == 2
    assert batch_size(10_000) == 32
    assert batch_size(10_000, most=1) == 1


async def test_a_failed_append_loses_no_decision(
    engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = engine.store.append
    failures = 0

    async def append_failing_twice(run_id: str, events: Any, *, then: Any = ()) -> list[bool]:
        # Once in the batch path, once more in the one-by-one path it falls back to.
        nonlocal failures
        if failures < 2 and any(isinstance(e, TaskSucceeded) and e.task == "a" for e in events):
            failures += 1
            raise RuntimeError("the log is unwell")
        return await real_append(run_id, events, then=then)

    monkeypatch.setattr(engine.store, "append", append_failing_twice)
    state = await run(
        engine,
        """
        name: after-a-failed-append
        tasks:
          - name: a
            script: echo 1
          - name: b
            depends: [a]
            script: echo 2
        """,
    )
    assert failures == 2
    assert state.status == "succeeded", state.reason
    events = await engine.store.read(state.run_id)
    assert [e.task for e in events if isinstance(e, TaskSucceeded)] == ["a", "b"]


async def test_a_forged_submission_is_checked_again_and_refused(engine: EmbeddedEngine) -> None:
    """Whoever can publish cannot start a run whose workflow the client would refuse."""
    from contracts.errors import NotFound
    from contracts.events import RunSubmitted

    forged = RunSubmitted(
        run_id="f" * 32,
        at=time.time(),
        workflow={
            "name": "forged",
            "params": {"v": {"type": "str"}},
            "tasks": [{"name": "t", "script": "echo {{ params.v }}"}],
        },
        params={"v": "$(id)"},
    )
    body = encode(forged)
    await engine.transport.publish(
        shard_queue(shard_of(forged.run_id, (await engine.client.shard_map()).count)), [body]
    )
    await until_dead_lettered(engine.transport, body, timeout=20)
    with pytest.raises(NotFound):
        await engine.store.find_run(forged.run_id)
    state = await run(engine, "name: after\ntasks:\n  - name: a\n    script: echo ok\n")
    assert state.status == "succeeded"


async def test_a_coordinator_keeps_nothing_of_the_snapshots_of_a_run_that_ended(
    engine: EmbeddedEngine,
) -> None:
    """A big run is snapshotted as it goes (every so many events); once it ends, the
    coordinator keeps no count of it, or a long-lived one would grow with every run."""
    taken: list[str] = []
    saving = engine.store.save_snapshot

    async def save(run_id: str, state: bytes) -> bool:
        taken.append(run_id)
        return await saving(run_id, state)

    engine.coordinator._runlog.save_snapshot = save  # type: ignore[method-assign]
    state = await run(
        engine, "name: big\ntasks:\n  - {name: each, items: range(400), script: 'true'}\n"
    )
    assert taken.count(state.run_id) >= 2  # on the way, and at its end
    assert state.run_id not in engine.coordinator._snapshots._taken
