"""The vocabulary is types from the step outcome through the events to the state."""

from __future__ import annotations

import typing

from contracts.codec import decode_event, encode
from contracts.events import (
    RunCompleted,
    RunSubmitted,
    TaskDispatched,
    TaskExpanded,
    TaskFailed,
    TaskStarted,
)
from contracts.spec import RetryPolicy
from contracts.vocabulary import FailureKind, RetryableKind, RunStatus, TaskStatus
from engine.state import replay, snapshot


def test_retry_policies_select_failure_kinds() -> None:
    assert set(typing.get_args(RetryableKind)) <= {kind.value for kind in FailureKind}
    assert RetryPolicy().on == [FailureKind.ERROR, FailureKind.TIMEOUT]


def test_failure_kinds_survive_the_wire_as_their_type() -> None:
    failed = TaskFailed(run_id="r", at=1.0, task="a", error="gone", reason=FailureKind.LOST)
    decoded = decode_event(encode(failed))
    assert isinstance(decoded, TaskFailed)
    assert decoded.reason is FailureKind.LOST
    assert b'"reason":"lost"' in encode(failed)  # the word stored in logs


def test_folded_and_snapshotted_states_hold_typed_statuses() -> None:
    log = [
        RunSubmitted(
            run_id="r",
            at=1.0,
            workflow={
                "name": "w",
                "tasks": [{"name": "a", "script": "x", "retry": {"limit": 0}}],
            },
            params={},
        ),
        TaskExpanded(run_id="r", at=1.5, task="a", index=-1, attempt=0, count=1),
        TaskDispatched(run_id="r", at=2.0, task="a"),
        TaskStarted(run_id="r", at=3.0, task="a"),
        TaskFailed(run_id="r", at=4.0, task="a", error="boom", reason=FailureKind.TIMEOUT),
        RunCompleted(run_id="r", at=5.0, state=RunStatus.FAILED, reason="failed tasks: a"),
    ]
    state = replay(log)
    for restored in (state, snapshot.load(snapshot.dump(state))):
        assert type(restored.status) is RunStatus and restored.status == RunStatus.FAILED
        inst = restored.nodes["a"].instances[0]
        assert type(inst.status) is TaskStatus and inst.status is TaskStatus.FAILED
        assert inst.reason is FailureKind.TIMEOUT
        assert type(restored.nodes["a"].status) is TaskStatus


def test_the_workflow_in_a_log_uses_the_file_s_own_words() -> None:
    """``artifacts.in`` is stored as ``in`` (it once leaked as ``in_``); both read back."""
    import asyncio

    from contracts.validation import parse_workflow
    from engine.client import Client
    from engine.runlog.memory import MemoryRunLog
    from engine.transport.memory import MemoryTransport

    workflow = parse_workflow(
        "name: w\ntasks:\n  - name: t\n    script: cat x\n"
        "    artifacts: {in: {x: 'file:///tmp/x'}}\n"
    )

    async def submitted() -> bytes:
        transport = MemoryTransport()
        await transport.start()
        await Client(MemoryRunLog(), transport, shards=1).submit(workflow, {})
        consumer = await transport.consume("conveyor.events.0", prefetch=1)
        return consumer.ready(1)[0].body

    body = asyncio.run(submitted())
    assert b'"in":{"x":"file:///tmp/x"}' in body and b'"in_"' not in body
    event = decode_event(body)
    assert isinstance(event, RunSubmitted)
    old = {**event.workflow}
    old["tasks"] = [{**t, "artifacts": {"in_": t["artifacts"]["in"]}} for t in old["tasks"]]
    for stored in (event.workflow, old):
        again = replay([RunSubmitted(run_id="r", at=1.0, workflow=stored, params={})])
        assert again.workflow.tasks[0].artifacts.in_ == {"x": "file:///tmp/x"}
