"""Runs of the local (embedded) home: driven by the process that steers them.

Without servers, a run advances only while a ``conveyor`` process runs its engine.
That process holds the run's lock (a file under ``HOME/locks``, locked with
``flock`` so it is released however the process ends). Another command can then
tell whether the run is in hand:

- held: the run is going; ``conveyor cancel`` leaves a note beside the lock and
  interrupts the process that holds it, which cancels the run as a first Ctrl-C does
  (but says who asked, and exits as for a cancelled run);
- free and unfinished: the process died; ``conveyor resume`` takes the lock and
  finishes the run, ``conveyor cancel`` records the cancellation without running
  anything.

Ctrl-C while a run is driven here: the first stops dispatching, kills the running
steps and records the run as cancelled (exit 130); a second exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import structlog

from contracts.errors import InvalidInput, Problem
from conveyor.embedded import WORKER_GRACE, EmbeddedEngine, default_worker_count
from conveyor.settings import Settings
from conveyor.wiring import open_artifacts
from engine.coordinator import Observer
from engine.runlog.sqlite import SqliteRunLog
from engine.state.model import RunState
from engine.triggers.firing import SIGNAL_KIND, decode_arrival
from engine.triggers.stores.sqlite import SqliteTriggerStore

log = structlog.get_logger("conveyor.local")

SIGNAL_POLL = 0.2
"""How often a local run's process looks for signals queued by another command."""
INTERRUPTED = "interrupted (Ctrl-C)"
CANCELLED = ("asked to cancel (conveyor cancel)", "cancelled (conveyor cancel)")
"""The word and reason of a stop that ``conveyor cancel`` asked for."""

STOP_SIGNALS = {
    signal.SIGINT: ("interrupted", INTERRUPTED),
    signal.SIGTERM: ("terminated", "terminated (SIGTERM)"),
    signal.SIGHUP: ("hung up", "hung up (SIGHUP)"),
}
"""What stops a local run, with the word said when it comes and the run's reason: a
terminal with Ctrl-C, a timeout, a CI job's cancel and systemd with SIGTERM, a closed
terminal or dropped SSH session with SIGHUP. Steps run in sessions of their own, so
none of these reaches them: the run's cancel kills them."""


class RunLock:
    """The lock of one run in a local home; held while a process drives the run."""

    def __init__(self, home: Path, run_id: str) -> None:
        self.path = home / "locks" / f"{run_id}.lock"
        self.cancel_note = self.path.with_suffix(".cancel")
        """Left by ``conveyor cancel`` before it interrupts the holder: the interrupt
        is a cancel asked for from elsewhere, not a Ctrl-C at the holder's terminal."""
        self._handle: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            return False
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        self._handle = handle
        return True

    def holder(self) -> int | None:
        """The pid of the live process driving the run, if any."""
        if not self.path.exists():
            return None
        if self.acquire():
            self.release()
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(self.path.read_text().strip())
        return None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if not self.acquire():
            raise InvalidInput(
                [Problem(f"run {self.path.stem} is being run by process {self.holder()}")]
            )
        self.cancel_note.unlink(missing_ok=True)  # of a process before this one
        try:
            yield
        finally:
            self.cancel_note.unlink(missing_ok=True)
            self.release()


async def drive(
    engine: EmbeddedEngine,
    home: Path,
    start: Callable[[], Awaitable[tuple[str, int]]],
    *,
    observer: Observer | None = None,
    on_interrupt: Callable[[str], None] = lambda _word: None,
) -> tuple[RunState, int | None]:
    """Start a run with ``start`` and drive it to its end here.

    ``start`` returns the run id and the round after which it counts as ended (-1; a
    retry's previous round). A signal of ``STOP_SIGNALS`` cancels the run, and a second
    one exits at once; ``on_interrupt`` hears the first's word ("interrupted", ...).
    Returns the final state and, if a signal stopped it, the exit code it calls for
    (128 + the signal's number; none for the interrupt of ``conveyor cancel``, whose run
    ends as any cancelled run).
    """
    if observer is not None:
        engine.coordinator.observe(observer)
    run_id, past_round = await start()
    lock = RunLock(home, run_id)
    with lock.held():
        stopped_by: list[signal.Signals] = []
        asked_elsewhere: list[signal.Signals] = []
        running = asyncio.get_running_loop()

        def interrupt(received: signal.Signals) -> None:
            if stopped_by:
                _quit_at_once(received, None)  # the second one: at once, whatever runs
            stopped_by.append(received)
            word, reason = STOP_SIGNALS[received]
            if received == signal.SIGINT and lock.cancel_note.exists():
                word, reason = CANCELLED
                asked_elsewhere.append(received)
            on_interrupt(word)
            cancel = running.create_task(engine.client.cancel(run_id, reason))
            cancel.add_done_callback(_log_failure)

        for received in STOP_SIGNALS:
            running.add_signal_handler(received, interrupt, received)
        relay = running.create_task(_relay_signals(engine, home, run_id))
        try:
            state = await engine.wait(run_id, past_round=past_round)
        finally:
            relay.cancel()
            for received in STOP_SIGNALS:
                running.remove_signal_handler(received)
                # Shutting down may wait for a step that cannot be stopped: a signal
                # from here on quits at once.
                signal.signal(received, _quit_at_once)
    if asked_elsewhere or not stopped_by:
        return state, None  # a cancel asked for elsewhere ends as a cancelled run does
    return state, 128 + stopped_by[0]


async def _relay_signals(engine: EmbeddedEngine, home: Path, run_id: str) -> None:
    """Signals for this run that ``conveyor signal``/``approve`` queued in the home's
    trigger inbox are sent to it from here, the process that drives it."""
    state = await engine.client.state(run_id)
    if not any(node.spec.signal for node in state.nodes.values()):
        return
    store = SqliteTriggerStore(home / "conveyor.db")
    try:
        while True:
            for key, payload in await store.pending():
                try:
                    arrival = decode_arrival(payload)
                except msgspec.DecodeError:
                    continue
                names = arrival.names
                if arrival.kind != SIGNAL_KIND or names.get("run") != run_id:
                    continue
                try:
                    await engine.client.signal(
                        run_id, str(names["signal"]), names.get("data"), key=arrival.key
                    )
                except InvalidInput as exc:
                    log.warning("signal refused", run_id=run_id, error=str(exc))
                await store.settle(key)
            await asyncio.sleep(SIGNAL_POLL)
    finally:
        await store.close()


def _quit_at_once(received: int, _frame: object) -> None:
    os._exit(128 + received)


def _log_failure(task: asyncio.Task[str]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("could not cancel the run", error=str(task.exception()))


def interrupt_holder(home: Path, run_id: str) -> int | None:
    """Ask the process driving a local run to cancel it; its pid, or None if none does."""
    lock = RunLock(home, run_id)
    pid = lock.holder()
    if pid is not None:
        lock.cancel_note.write_text(f"{os.getpid()}\n")
        os.kill(pid, signal.SIGINT)
    return pid


@contextlib.asynccontextmanager
async def local_engine(
    settings: Settings,
    *,
    workers: int | None = None,
    run_steps: bool = True,
    worker_grace: float = WORKER_GRACE,
) -> AsyncIterator[EmbeddedEngine]:
    """An embedded engine on the local home's run log and artifact store.

    Without ``run_steps`` it starts no workers: enough to record what the run's log
    calls for (a cancellation) without running anything. ``worker_grace``: how long
    steps still running when it stops may finish before they are handed back.
    """
    store = SqliteRunLog(settings.home / "conveyor.db")
    try:
        async with EmbeddedEngine(
            store,
            workers=workers or default_worker_count(),
            artifacts=open_artifacts(settings),
            run_steps=run_steps,
            max_result_bytes=settings.max_result_bytes,
            worker_grace=worker_grace,
        ) as engine:
            yield engine
    finally:
        await store.close()
