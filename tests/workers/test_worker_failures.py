"""Whatever fails while a worker handles an attempt fails the attempt, with its reason.

A failure is injected at each stage of the handling; every run must end (never hang)
and say what went wrong.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from contracts.events import Event, TaskSucceeded
from contracts.validation import parse_workflow
from contracts.vocabulary import RunStatus
from conveyor.embedded import EmbeddedEngine
from engine.runlog.memory import MemoryRunLog
from engine.state.model import RunState
from workers.artifacts import FsspecArtifactStore
from workers.executors import DEFAULT_MIDDLEWARE, Proceed, StepCall, StepOutcome
from workers.outbox import EventOutbox

ONE_STEP = """
    name: one
    tasks:
      - name: t
        script: echo 1
"""


async def run(text: str, **engine: Any) -> RunState:
    workflow = parse_workflow(textwrap.dedent(text))
    async with EmbeddedEngine(workers=2, **engine) as e:
        return await asyncio.wait_for(e.run(workflow, {}), 20)


def failure_of(state: RunState, task: str = "t") -> str:
    inst = state.nodes[task].instances[0]
    assert inst.error is not None
    return inst.error


def broken(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("disk on fire")


@pytest.mark.parametrize("stage", ["stage_inputs", "store_outputs"])
async def test_a_failing_stage_around_the_step_fails_the_attempt(
    monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    monkeypatch.setattr(f"workers.worker.{stage}", broken)
    state = await run(ONE_STEP)
    assert state.status == RunStatus.FAILED
    assert failure_of(state) == "RuntimeError: disk on fire"


async def test_a_failing_executor_fails_the_attempt() -> None:
    async def exploding(call: StepCall, proceed: Proceed) -> StepOutcome:
        raise KeyError("gone")

    state = await run(ONE_STEP, middleware=(*DEFAULT_MIDDLEWARE, exploding))
    assert state.status == RunStatus.FAILED
    assert failure_of(state) == "KeyError: 'gone'"


async def test_a_result_the_wire_cannot_carry_fails_the_attempt() -> None:
    state = await run(
        """
        name: opaque
        tasks:
          - name: t
            python: teststeps:opaque
        """
    )
    assert state.status == RunStatus.FAILED
    assert "TypeError" in failure_of(state) and "unsupported" in failure_of(state)


async def test_an_outcome_that_cannot_be_sent_is_reported_as_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = EventOutbox.send

    async def refusing(self: EventOutbox, queue: str, events: list[Event]) -> None:
        if any(isinstance(event, TaskSucceeded) for event in events):
            raise ValueError("the broker said no")
        await real(self, queue, events)

    monkeypatch.setattr(EventOutbox, "send", refusing)
    state = await run(ONE_STEP)
    assert state.status == RunStatus.FAILED
    assert failure_of(state) == "its outcome could not be sent: ValueError: the broker said no"


async def test_output_lines_that_cannot_be_stored_do_not_lose_the_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def failing_write(self: MemoryRunLog, lines: Any) -> None:
        raise OSError("log store full")

    monkeypatch.setattr(MemoryRunLog, "write_lines", failing_write)
    state = await run(ONE_STEP)
    assert state.status == RunStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("nosuchscheme://bucket/x", "no filesystem serves nosuchscheme:// URLs (unknown scheme)"),
        ("s3://bucket/x", "s3:// URLs need a package that is not installed: Install s3fs"),
    ],
)
async def test_an_artifact_url_no_backend_serves_fails_the_task(
    url: str, reason: str, tmp_path: Path
) -> None:
    state = await run(
        f"""
        name: fetch
        tasks:
          - name: t
            script: cat input
            artifacts: {{in: {{input: '{url}'}}}}
        """,
        artifacts=FsspecArtifactStore(tmp_path),
    )
    assert state.status == RunStatus.FAILED
    assert reason in failure_of(state)


@pytest.mark.parametrize(
    "step",
    [
        "python: teststeps:deep\n            args: {levels: 1000}",
        "script: python3 -c \"print('[' * 5000 + ']' * 5000)\"",
    ],
    ids=["python-result", "printed-json"],
)
async def test_a_result_nested_too_deeply_fails_the_attempt(step: str) -> None:
    state = await run(
        f"""
        name: deep
        tasks:
          - name: t
            {step}
        """
    )
    assert state.status == RunStatus.FAILED
    error = failure_of(state)
    assert "nested more than 100 levels deep" in error or "RecursionError" in error, error
