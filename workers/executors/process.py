"""Script and command steps as subprocesses, with their output captured line by line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import psutil
import structlog

from contracts.messages import StepSpec, TaskReady
from contracts.vocabulary import FailureKind
from workers.executors.base import LogEmitter, StepOutcome, succeeded
from workers.executors.orphans import WORKER_VARIABLE, end_orphaned_steps
from workers.executors.spawning import Spawned, spawn

log = structlog.get_logger("conveyor.worker")

INTERPRETERS = {"sh": ["sh"], "bash": ["bash"], "python": [sys.executable, "-u"]}
SUFFIX = {"sh": ".sh", "bash": ".sh", "python": ".py"}


class ProcessExecutor:
    """Runs a step as a process group; timeouts and cancels kill the whole tree."""

    def __init__(self, worker: str = "") -> None:
        """``worker``: the name step processes carry (see ``workers.executors.orphans``)."""
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"

    async def start(self) -> None:
        """End the steps that workers of this host which are gone left running, before
        any step of this one starts (a resumed run would run them a second time)."""
        killed = await asyncio.to_thread(end_orphaned_steps, self.worker)
        if killed:
            log.warning("killed the processes of steps whose worker is gone", processes=killed)

    async def stop(self) -> None:
        return None

    async def run(self, task: TaskReady, emit: LogEmitter, workdir: Path) -> StepOutcome:
        step = task.step
        with tempfile.TemporaryDirectory(prefix="conveyor-script-") as scratch:
            scratch_dir = Path(scratch)
            argv = self._argv(step, scratch_dir)
            env = {
                **step_environment(),
                **conveyor_env(task),
                **step.env,
                WORKER_VARIABLE: self.worker,
            }
            try:
                proc = await spawn(argv, cwd=workdir, env=env)
            except FileNotFoundError:
                return StepOutcome(
                    ok=False, error=f"cannot start {argv[0]!r}: not found", reason=FailureKind.START
                )
            except PermissionError:
                return StepOutcome(
                    ok=False,
                    error=f"cannot start {argv[0]!r}: permission denied",
                    reason=FailureKind.START,
                )
            except NotADirectoryError:
                return StepOutcome(
                    ok=False,
                    error=f"workdir {str(workdir)!r} is not a directory",
                    reason=FailureKind.START,
                )
            stdout_parts: list[bytes] = []
            readers = asyncio.gather(
                pump(proc.stdout, "stdout", emit, stdout_parts),
                pump(proc.stderr, "stderr", emit, None),
            )
            try:
                code = await proc.wait()
            except asyncio.CancelledError:  # cancelled or timed out: the whole tree goes
                await _kill_tree(proc)
                await proc.end_reading(readers)
                raise
            # The step ends with its main process. What it started in the background
            # goes too: it would reach past the step, and hold its output open (so the
            # step would never end) for as long as it ran.
            if _kill_group(proc):
                emit("system", "the step left processes running: they were killed")
            await proc.end_reading(readers)
            readers.result()  # what reading its output raised fails the step
            if code != 0:
                detail = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
                return StepOutcome(ok=False, error=detail, reason=FailureKind.ERROR, exit_code=code)
            return succeeded(stdout_parts, workdir, step.outputs)

    def _argv(self, step: StepSpec, scratch: Path) -> list[str]:
        if step.kind == "command":
            assert step.argv
            argv = list(step.argv)
            # Resolve against PATH now so a missing program is a clear 'start' failure.
            found = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
            return [found or argv[0], *argv[1:]]
        interpreter = step.interpreter or "sh"
        script = scratch / f"step{SUFFIX.get(interpreter, '')}"
        script.write_text(step.source or "", encoding="utf-8")
        return [*INTERPRETERS.get(interpreter, [interpreter]), str(script)]


MAX_LINE = 1 << 16


async def pump(
    stream: asyncio.StreamReader | None, name: str, emit: LogEmitter, keep: list[bytes] | None
) -> None:
    """Emit a stream's lines as they come; keep its bytes whole if asked.

    Reads chunks and splits them itself: ``readline`` drops data on lines longer than
    its limit, and a step's result is often one long JSON line.
    """
    if stream is None:
        return
    pending = b""
    while True:
        chunk = await stream.read(1 << 16)
        if not chunk:
            if pending:
                emit(name, pending.decode("utf-8", errors="replace"))
            return
        if keep is not None:
            keep.append(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            emit(name, line.decode("utf-8", errors="replace"))
        if len(pending) > MAX_LINE:  # an endless line is logged in pieces
            emit(name, pending.decode("utf-8", errors="replace"))
            pending = b""


def _kill_group(proc: Spawned) -> bool:
    """Kill what is left of the step's process group; whether anything was."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


async def _kill_tree(proc: Spawned) -> None:
    """Kill the step's process group and any descendants that left it."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    await proc.wait()


PASSED_THROUGH = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
"""What a step sees of the worker's environment, with ``LC_*`` and the names listed in
``CONVEYOR_STEP_ENV`` (comma-separated): nothing of the worker's own configuration
(broker and Redis URLs with their passwords) unless an operator lists it."""


def step_environment() -> dict[str, str]:
    extra = {n.strip() for n in os.environ.get("CONVEYOR_STEP_ENV", "").split(",") if n.strip()}
    return {
        name: value
        for name, value in os.environ.items()
        if name in PASSED_THROUGH or name.startswith("LC_") or name in extra
    }


def conveyor_env(task: TaskReady) -> dict[str, str]:
    return {
        "CONVEYOR_RUN_ID": task.run_id,
        "CONVEYOR_TASK": task.task,
        "CONVEYOR_INDEX": str(task.index),
        "CONVEYOR_ATTEMPT": str(task.attempt),
        "CONVEYOR_ITEM": json.dumps(task.item),
    }
