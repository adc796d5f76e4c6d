"""Driving a local run: its lock is held before anything of it exists."""

from __future__ import annotations

import os
from pathlib import Path

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.local import drive
from conveyor.locks import RunLock
from engine.runids import new_run_id


async def test_the_run_is_locked_before_it_is_submitted(tmp_path: Path) -> None:
    """A server starting on the home takes up the unfinished runs nobody holds: a run
    submitted before its lock was taken could be driven twice."""
    workflow = parse_workflow("name: w\ntasks: [{name: a, script: 'true'}]")
    run_id = new_run_id()
    holders: list[int | None] = []
    async with EmbeddedEngine() as engine:

        async def start() -> int:
            holders.append(RunLock(tmp_path, run_id).holder())
            await engine.submit(workflow, {}, run_id=run_id)
            return -1

        state, stopped_with = await drive(engine, tmp_path, run_id, start)
    assert holders == [os.getpid()]
    assert (state.run_id, state.status, stopped_with) == (run_id, "succeeded", None)
    assert RunLock(tmp_path, run_id).holder() is None  # released at the end


SIGNALLED_WHILE_STARTING = """
import asyncio, os, signal, sys
from pathlib import Path
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.local import drive
from engine.runids import new_run_id

async def main() -> None:
    workflow = parse_workflow("name: w\\ntasks: [{name: a, script: 'sleep 30'}]")
    run_id = new_run_id()
    heard = asyncio.Event()
    async with EmbeddedEngine() as engine:
        async def start() -> int:
            os.kill(os.getpid(), signal.SIGTERM)  # as systemd would, mid-start
            await heard.wait()  # handled before the run exists
            await engine.submit(workflow, {}, run_id=run_id)
            return -1
        state, stopped_with = await drive(
            engine, Path(sys.argv[1]), run_id, start, on_interrupt=lambda _word: heard.set()
        )
    print(state.status, state.reason, stopped_with)

asyncio.run(main())
"""


def test_a_signal_while_the_run_starts_cancels_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SIGNALLED_WHILE_STARTING, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["cancelled", "terminated", "(SIGTERM)", "143"]


def test_a_lock_freed_while_it_is_looked_at_is_taken_not_skipped(tmp_path: Path) -> None:
    """Taken by another when tried, let go before its holder is read: ``held`` takes it
    then, rather than going on without it."""
    from conveyor.locks import ProcessLock

    other = ProcessLock(tmp_path / "x.lock", "x is held")
    assert other.acquire()

    class LetGoWhileLooking(ProcessLock):
        def holder(self) -> int | None:
            other.release()
            return super().holder()

    lock = LetGoWhileLooking(tmp_path / "x.lock", "x is held")
    with lock.held():
        assert lock._handle is not None  # it holds the lock inside
        assert not other.acquire()
