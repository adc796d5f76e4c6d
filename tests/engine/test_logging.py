"""Log lines carry the ids of the run, task and attempt they are about, and no others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

import pytest
import structlog
from structlog.contextvars import merge_contextvars

from contracts.events import RunSubmitted, TaskDispatched
from contracts.ports import Transport
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.logsetup import configure_logging
from engine import announce
from engine.state.model import RunState
from workers.outbox import EventOutbox


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


async def test_a_change_not_announced_is_logged_with_its_own_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One task publishes the changes of every run: each failure names the run whose
    change it was, not the run that happened to start that task."""
    monkeypatch.setattr(announce, "PUBLISH_ATTEMPTS", 1)
    broker_back = asyncio.Event()

    class BrokerAway:
        async def announce(self, key: str, body: bytes) -> None:
            await broker_back.wait()
            raise ConnectionError("broker away")

    def state(run_id: str) -> RunState:
        return cast(RunState, SimpleNamespace(run_id=run_id, workflow=SimpleNamespace(name="w")))

    announcer = announce.Announcer(cast(Transport, BrokerAway()))
    with structlog.testing.capture_logs(processors=[merge_contextvars]) as logs:
        for run_id in ("run-a", "run-b"):  # as the coordinator calls it, ids bound
            with structlog.contextvars.bound_contextvars(run_id=run_id):
                submitted = RunSubmitted(run_id=run_id, at=0.0, workflow={"name": "w"}, params={})
                announcer(submitted, state(run_id))
        broker_back.set()
        await announcer.drain()
    assert [(entry["event"], entry["run_id"]) for entry in logs] == [
        ("state change not announced", "run-a"),
        ("state change not announced", "run-b"),
    ]


async def test_what_publishes_many_attempts_events_logs_under_none_of_them() -> None:
    """A worker's outbox publishes the events of the attempts that finish together:
    what the transport logs meanwhile names none of those attempts."""
    seen: list[dict[str, object]] = []

    class Recording:
        async def publish(self, queue: str, bodies: list[bytes]) -> None:
            seen.append(structlog.contextvars.get_contextvars())

    outbox = EventOutbox(cast(Transport, Recording()))
    with structlog.contextvars.bound_contextvars(run_id="run-a", task="t", attempt=1):
        await outbox.send("conveyor.events.0", [TaskDispatched(run_id="run-a", at=0.0, task="t")])
    assert seen == [{}]
