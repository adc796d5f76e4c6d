"""Every log line about a step carries its run, task and attempt."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import structlog

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.logsetup import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


async def test_json_log_lines_carry_run_task_and_attempt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    workflow = parse_workflow(
        "name: logged\ntasks:\n  - name: a\n    retry: {limit: 1, backoff: {delay: 1ms}}\n"
        "    script: '[ $CONVEYOR_ATTEMPT = 2 ]'\n"
    )
    async with EmbeddedEngine(workers=1) as engine:
        state = await asyncio.wait_for(engine.run(workflow, {}), 20)
    assert state.status == "succeeded"
    records = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    steps = [r for r in records if r["event"] in ("step started", "step finished")]
    assert [(r["event"], r["attempt"]) for r in steps] == [
        ("step started", 1),
        ("step finished", 1),
        ("step started", 2),
        ("step finished", 2),
    ]
    assert all(r["run_id"] == state.run_id and r["task"] == "a" and r["index"] == 0 for r in steps)
    completed = [r for r in records if r["event"] == "run completed"]
    assert completed and completed[0]["run_id"] == state.run_id
    assert all("timestamp" in r and "level" in r for r in records)


async def test_a_worker_started_for_a_run_does_not_log_as_part_of_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The embedded engine starts a pool's worker when a run first needs it; the worker
    then serves every run, so its own lines name none."""
    configure_logging("info", "json")
    workflow = parse_workflow("name: first\ntasks:\n  - name: a\n    script: 'true'\n")
    async with EmbeddedEngine(workers=1) as engine:
        # Submitted with ids bound, as a trigger submits the runs it fires.
        with structlog.contextvars.bound_contextvars(trigger="nightly"):
            state = await asyncio.wait_for(engine.run(workflow, {}), 20)
    assert state.status == "succeeded"
    records = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    own = [r for r in records if r["event"] in ("worker started", "worker stopped")]
    assert [r["event"] for r in own] == ["worker started", "worker stopped"]
    assert not [r for r in own if {"run_id", "task", "trigger"} & r.keys()]
