"""A server whose schedules or runs would stop moving stops, and says why, instead of
answering HTTP as if all were well."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conveyor.cli.app import app
from conveyor.embedded import EmbeddedEngine
from conveyor.server import home
from conveyor.settings import Settings
from engine.triggers.scheduler import Scheduler


async def failure_of(supervised: Any) -> str:
    heard: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    supervised.supervisor.on_failure(heard.set_result)
    async with asyncio.timeout(10):
        return await heard


async def test_a_server_whose_engine_lost_a_loop_fails_with_the_engines_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engines: list[EmbeddedEngine] = []
    local_engine = home.local_engine

    @contextlib.asynccontextmanager
    async def kept(*args: Any, **kwargs: Any) -> AsyncIterator[EmbeddedEngine]:
        async with local_engine(*args, **kwargs) as engine:
            engines.append(engine)
            yield engine

    monkeypatch.setattr(home, "local_engine", kept)
    async with home.serving(Settings(home=tmp_path), workers=2) as runtime:
        (engine,) = engines
        await engine.ensure_pools({"default"})
        worker: Any = engine._workers["default"]
        await worker._intake._round.consumer.close()  # the worker's intake loop ends
        reason = await failure_of(runtime)
    assert "its loop worker-embedded" in reason and "ended" in reason


async def test_a_server_whose_scheduler_died_fails_and_one_stopped_does_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def dies(self: Scheduler) -> None:
        raise RuntimeError("the schedule cursor store went away")

    monkeypatch.setattr(Scheduler, "run", dies)
    async with home.serving(Settings(home=tmp_path), workers=1) as runtime:
        reason = await failure_of(runtime)
    assert reason == (
        "server: its loop scheduler ended: RuntimeError: the schedule cursor store went away"
    )

    monkeypatch.undo()
    async with home.serving(Settings(home=tmp_path), workers=1) as stopped:
        pass
    assert stopped.supervisor.failure is None  # stopping on purpose is no failure


def test_conveyor_server_stops_and_exits_1_when_a_loop_it_needs_ends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def dies(self: Scheduler) -> None:
        raise RuntimeError("the schedule cursor store went away")

    monkeypatch.setattr(Scheduler, "run", dies)
    result = CliRunner().invoke(app, ["server", "--port", "0", "--home", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "conveyor server on http://127.0.0.1:0" in result.output
    assert "stopped: server: its loop scheduler ended: RuntimeError" in result.output
