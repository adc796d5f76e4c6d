"""``conveyor events`` and ``conveyor logs`` print a run's whole log and whole output,
read a page at a time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from contracts.events import Event, RunSubmitted, TaskDispatched
from contracts.ports import LogLine, LogPage
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


def test_logs_prints_each_attempt_whole_in_page_order_a_page_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed_in_turn = [  # (task, item, attempt, text), as the steps printed them
        ("b", 0, 1, "b0"),
        ("a", 1, 1, "a1 first"),
        ("a", 0, 1, "a0 first"),
        ("a", 1, 2, "a1 retried"),
        ("a", 0, 1, "a0 second"),
    ]

    async def record() -> None:
        store = SqliteRunLog(tmp_path / "conveyor.db")
        # a fans out, b does not: only a's lines name their item.
        tasks = [{"name": "a", "items": [0, 1], "script": "x"}, {"name": "b", "script": "y"}]
        workflow = {"name": "wf", "tasks": tasks}
        submitted = RunSubmitted(run_id="r1", at=1.0, workflow=workflow, params={})
        await store.append("r1", [submitted])
        await store.write_lines(
            [
                LogLine(run_id="r1", task=t, index=i, attempt=n, stream="stdout", at=2.0, text=x)
                for t, i, n, x in printed_in_turn
            ]
        )
        await store.close()

    asyncio.run(record())
    for name in ("CONVEYOR_REDIS_URL", "CONVEYOR_AMQP_URL"):  # the runs are in this home
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("conveyor.cli.inspect.LINES_PAGE", 2)
    pages: list[int] = []
    real = SqliteRunLog.page_lines

    async def page_lines(self: SqliteRunLog, *args: Any, **kwargs: Any) -> LogPage:
        page = await real(self, *args, **kwargs)
        pages.append(len(page.lines))
        return page

    async def whole(*args: Any, **kwargs: Any) -> list[LogLine]:
        raise AssertionError("read a run's lines whole")

    monkeypatch.setattr(SqliteRunLog, "page_lines", page_lines)
    monkeypatch.setattr(SqliteRunLog, "read_lines", whole)

    result = CliRunner().invoke(app, ["logs", "r1", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "a[0]#1 stdout| a0 first",
        "a[0]#1 stdout| a0 second",
        "a[1]#1 stdout| a1 first",
        "a[1]#2 stdout| a1 retried",
        "b#1 stdout| b0",
    ]
    assert pages == [2, 2, 1]

    retried = CliRunner().invoke(app, ["logs", "r1", "--attempt", "2", "--home", str(tmp_path)])
    assert retried.exit_code == 0, retried.output
    assert retried.output == "a[1]#2 stdout| a1 retried\n"


def _run_of_one_line(home: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A run in ``home`` whose one task, ``process``, printed one line; the CLI options
    that read it."""
    workflow = {"name": "wf", "tasks": [{"name": "process", "script": "true"}]}

    async def record() -> None:
        store = SqliteRunLog(home / "conveyor.db")
        await store.append("r1", [RunSubmitted(run_id="r1", at=1.0, workflow=workflow, params={})])
        line = LogLine(
            run_id="r1", task="process", index=0, attempt=1, stream="stdout", at=2.0, text="hi"
        )
        await store.write_lines([line])
        await store.close()

    asyncio.run(record())
    for name in ("CONVEYOR_REDIS_URL", "CONVEYOR_AMQP_URL"):  # the runs are in this home
        monkeypatch.delenv(name, raising=False)
    return ["--home", str(home)]


def test_logs_of_a_task_checks_its_name_against_the_submission_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naming a task does not build the run's state (most of a second on a
    1,000,000-item run) before the first line; a misspelt name is answered."""
    home = _run_of_one_line(tmp_path, monkeypatch)

    async def no_state(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("built the run's state")

    monkeypatch.setattr("engine.client.Client.state", no_state)
    found = CliRunner().invoke(app, ["logs", "r1", "process", *home])
    assert found.exit_code == 0, found.output
    assert found.output == "process#1 stdout| hi\n"

    misspelt = CliRunner().invoke(app, ["logs", "r1", "procss", *home])
    assert misspelt.exit_code == 2
    assert "has no task 'procss' (did you mean 'process'?); its tasks: process" in misspelt.output


def test_logs_that_find_no_line_say_so_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _run_of_one_line(tmp_path, monkeypatch)
    for options, whose in [
        (["process", "--attempt", "2"], "task 'process' (attempt 2)"),
        (["--attempt", "3"], "the steps of run r1 (attempt 3)"),
    ]:
        silent = CliRunner().invoke(app, ["logs", "r1", *options, *home])
        assert silent.exit_code == 0
        assert silent.stdout == ""
        assert silent.stderr == f"no lines: {whose} printed none\n"
    found = CliRunner().invoke(app, ["logs", "r1", "process", *home])
    assert found.stderr == ""


@pytest.mark.parametrize("redis_url", [None, ""])
def test_a_run_of_the_home_that_no_process_drives_is_listed_stalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str | None
) -> None:
    """Unset or empty, CONVEYOR_REDIS_URL leaves the runs in the home (as the store
    chosen for them does), so the home's locks say who drives them."""
    submitted = RunSubmitted(
        run_id="r1",
        at=1.0,
        workflow={"name": "wf", "tasks": [{"name": "a", "script": "x"}]},
        params={},
    )

    async def record() -> None:
        store = SqliteRunLog(tmp_path / "conveyor.db")
        await store.append("r1", [submitted])
        await store.close()

    asyncio.run(record())
    monkeypatch.delenv("CONVEYOR_AMQP_URL", raising=False)
    if redis_url is None:
        monkeypatch.delenv("CONVEYOR_REDIS_URL", raising=False)
    else:
        monkeypatch.setenv("CONVEYOR_REDIS_URL", redis_url)
    listed = CliRunner().invoke(app, ["runs", "--json", "--home", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert [(r["run_id"], r["state"], r["stalled"]) for r in json.loads(listed.output)] == [
        ("r1", "running", True)
    ]


def test_runs_are_listed_with_what_started_them_and_narrowed_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = {"r1": "cli", "r2": "webhook:push", "r3": "webhook:nightly", "r4": "api"}

    async def record() -> None:
        store = SqliteRunLog(tmp_path / "conveyor.db")
        for at, (run_id, trigger) in enumerate(started.items()):
            submitted = RunSubmitted(
                run_id=run_id,
                at=float(at),
                workflow={"name": "wf", "tasks": [{"name": "a", "script": "x"}]},
                params={},
                trigger=trigger,
            )
            await store.append(run_id, [submitted])
        await store.close()

    asyncio.run(record())
    monkeypatch.delenv("CONVEYOR_AMQP_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_REDIS_URL", raising=False)

    def listed(*args: str) -> list[str]:
        done = CliRunner().invoke(app, ["runs", *args, "--home", str(tmp_path)])
        assert done.exit_code == 0, done.output
        return [line for line in done.output.splitlines() if line.startswith("│")]

    def column(rows: list[str], number: int) -> list[str]:
        return [row.split("│")[number].strip() for row in rows]

    everything = listed()  # newest first
    assert column(everything, 1) == ["r4", "r3", "r2", "r1"]
    assert column(everything, 4) == ["api", "webhook:nightly", "webhook:push", "cli"]
    assert column(listed("--trigger", "webhook"), 1) == ["r3", "r2"]
    assert column(listed("--trigger", "webhook:push"), 1) == ["r2"]
    refused = CliRunner().invoke(app, ["runs", "--trigger", "web hook", "--home", str(tmp_path)])
    assert refused.exit_code == 2
    assert "--trigger: 'web hook': a kind (webhook)" in refused.output
