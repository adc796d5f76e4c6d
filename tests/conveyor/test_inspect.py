"""``conveyor events`` prints a run's whole log, read a page at a time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from contracts.events import Event, RunSubmitted, TaskDispatched
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
    monkeypatch.setattr("engine.client.FOLLOW_PAGE", 3)
    real = SqliteRunLog.read

    async def read(self: SqliteRunLog, *args: Any, **kwargs: Any) -> list[Event]:
        page = await real(self, *args, **kwargs)
        pages.append(len(page))
        return page

    monkeypatch.setattr(SqliteRunLog, "read", read)
    result = CliRunner().invoke(app, ["events", "r1", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.output.splitlines()]
    assert [e["type"] for e in printed] == ["run_submitted", *["task_dispatched"] * 6]
    assert [e.get("task") for e in printed[1:]] == [f"t{i}" for i in range(6)]
    assert pages == [3, 3, 1, 0]
