"""pytest fixtures for testing Conveyor workflows (registered as the ``conveyor`` plugin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conveyor.testing import FakeClock, RunResult, run_workflow_async


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that only moves when timers are due (or when you advance it)."""
    return FakeClock()


@pytest.fixture
def run_conveyor(fake_clock: FakeClock) -> Callable[..., Any]:
    """``await run_conveyor(workflow, params, fakes=..., failures=...)`` -> RunResult."""

    async def run(workflow: Any, params: dict[str, Any] | None = None, **kwargs: Any) -> RunResult:
        kwargs.setdefault("clock", fake_clock)
        return await run_workflow_async(workflow, params, **kwargs)

    return run
