"""``conveyor events`` prints a run's whole log, read a page at a time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts.events import RunSubmitted, TaskDispatched
from conveyor.cli import inspect
from conveyor.cli.app import app
from engine.runlog.sqlite import SqliteRunLog


def test_events_are_printed_whole_a_page_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [RunSubmitted(run_id="r1", at=1.0, workflow={"name": "wf"}, params={})]
    events += [TaskDispatched(run_id="r1", at=2.0, task=f"t{i}") for i in range(6)]

    async def record() -> None:
        store = SqliteRunLog(tmp_path / "conveyor.db")
        await store.append("r1", events[:3])
        await store.append("r1", events[3:])
        await store.close()

    asyncio.run(record())
    for name in ("CONVEYOR_REDIS_URL", "CONVEYOR_AMQP_URL"):  # the runs are in this home
        monkeypatch.delenv(name, raising=False)
    pages: list[int] = []
    monkeypatch.setattr(inspect, "FOLLOW_PAGE", 3)
    real = inspect.Client.events

    async def events_of(self: inspect.Client, *args: object, **kwargs: object) -> list[object]:
        page = await real(self, *args, **kwargs)  # type: ignore[arg-type]
        pages.append(len(page))
        return page  # type: ignore[return-value]

    monkeypatch.setattr(inspect.Client, "events", events_of)
    result = CliRunner().invoke(app, ["events", "r1", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.output.splitlines()]
    assert [e["type"] for e in printed] == ["run_submitted", *["task_dispatched"] * 6]
    assert [e.get("task") for e in printed[1:]] == [f"t{i}" for i in range(6)]
    assert pages == [3, 3, 1, 0]
