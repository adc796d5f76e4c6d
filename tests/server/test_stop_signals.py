"""The server hears stop signals from its first moment: one that comes while it starts
cancels the start; once it serves, the first stops it and the next ends its running
steps at once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from conveyor.cli.server_process import StopSignals


class Web:
    should_exit = False
    force_exit = False


class Runtime:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.hurried = 0

    def hurry(self) -> None:
        self.hurried += 1


async def heard(received: signal.Signals, done: Callable[[], bool]) -> None:
    """Send ``received`` to this process; return once the loop has handled it (``done``)."""
    os.kill(os.getpid(), received)
    async with asyncio.timeout(10):
        while not done():
            await asyncio.sleep(0.01)  # the loop reads the signal on one of its next turns


@pytest.fixture
async def stop_signals() -> Any:
    made = StopSignals("running steps get up to 30s to finish")
    yield made
    running = asyncio.get_running_loop()
    for received in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        running.remove_signal_handler(received)


async def test_a_signal_while_starting_cancels_the_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    made: list[StopSignals] = []

    async def start() -> None:
        made.append(StopSignals("finishing the requests in flight"))
        await asyncio.Event().wait()  # as a server still connecting to its broker

    starting = asyncio.ensure_future(start())
    try:
        while not made:
            await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(10):
            await asyncio.wait({starting})
        assert starting.cancelled() and made[0].cancelled_start
        assert "stopping (SIGTERM): finishing the requests" in capsys.readouterr().out
    finally:
        running = asyncio.get_running_loop()
        for received in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            running.remove_signal_handler(received)


async def test_the_second_signal_ends_the_running_steps_at_once(
    stop_signals: StopSignals, capsys: pytest.CaptureFixture[str]
) -> None:
    web, runtime = Web(), Runtime()
    stop_signals.stop(web, runtime)  # type: ignore[arg-type]
    assert not web.should_exit
    await heard(signal.SIGHUP, lambda: web.should_exit)
    assert runtime.stopping.is_set() and not web.force_exit
    await heard(signal.SIGINT, lambda: web.force_exit)
    assert runtime.hurried == 1
    assert "stopping now" in capsys.readouterr().out
