"""Runs of the local (embedded) home: driven by the process that steers them.

Without servers, a run advances only while a ``conveyor`` process runs its engine, and
only one may drive it (``conveyor.locks``): a ``conveyor run``, ``resume`` or
``retry`` process holding the run's lock, or else the embedded server serving the home.
Another command tells which, and steers the run through it:

- a process holds the run: ``conveyor cancel`` leaves a note beside the lock and
  interrupts it, which cancels the run as a first Ctrl-C does (but says who asked, and
  exits as for a cancelled run); signals go through the home's trigger inbox;
- a server serves the home: cancel, retry, resume and signals go through the inbox to
  it (``queue_for_driver``);
- neither, and the run is unfinished: its process died; ``conveyor resume`` takes the
  lock and finishes the run, ``conveyor cancel`` records the cancellation without
  running anything.

Ctrl-C while a run is driven here: the first stops dispatching, kills the running
steps and records the run as cancelled (exit 130); a second exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from contracts.errors import InvalidInput, Problem
from contracts.events import Event, RunCompleted, RunSubmitted
from contracts.spec import Workflow
from conveyor.locks import RunLock
from conveyor.settings import Settings
from conveyor.wiring import open_artifacts
from engine.coordinator import Observer
from engine.runlog.sqlite import SqliteRunLog
from engine.state.model import RunState
from engine.triggers.firing import (
    SIGNAL_KIND,
    STEER_KIND,
    Arrival,
    decode_arrival,
    encode_arrival,
)
from engine.triggers.stores.sqlite import SqliteTriggerStore

if TYPE_CHECKING:
    from conveyor.embedded import EmbeddedEngine
    from conveyor.local_notify import LocalNotifications

log = structlog.get_logger("conveyor.local")

SIGNAL_POLL = 0.2
"""How often a local run's process looks for signals queued by another command."""
INTERRUPTED = "interrupted (Ctrl-C)"
RECORDED_WITHIN = 30.0
"""How long a local run's start may take to reach its log (an embedded engine: ms)."""
SERVER_ANSWERS_WITHIN = 30.0
"""How long a command queued for the home's server waits for it to be taken."""

STOP_SIGNALS = {
    signal.SIGINT: ("interrupted", INTERRUPTED),
    signal.SIGTERM: ("terminated", "terminated (SIGTERM)"),
    signal.SIGHUP: ("hung up", "hung up (SIGHUP)"),
}
"""What stops a local run, with the word said when it comes and the run's reason: a
terminal with Ctrl-C, a timeout, a CI job's cancel and systemd with SIGTERM, a closed
terminal or dropped SSH session with SIGHUP. Steps run in sessions of their own, so
none of these reaches them: the run's cancel kills them."""


CHILDREN_END_WITHIN = 10.0
"""Seconds a run's end waits for its child runs' cancels to take."""


async def drive(
    engine: EmbeddedEngine,
    home: Path,
    run_id: str,
    start: Callable[[], Awaitable[int]],
    *,
    observer: Observer | None = None,
    on_interrupt: Callable[[str], None] = lambda _word: None,
    notices: LocalNotifications | None = None,
) -> tuple[RunState, int | None]:
    """Take the run's lock, start it with ``start`` and drive it to its end here.

    The lock comes first: a server starting on the home meanwhile takes up the
    unfinished runs nobody holds, and would take this one too. ``start`` returns the
    round after which the run counts as ended (-1; a retry's previous round). A signal
    of ``STOP_SIGNALS`` cancels the run, and a second
    one exits at once; ``on_interrupt`` hears the first's word ("interrupted", ...).
    ``notices``: the run's ``notify:`` webhooks, delivered before the lock is let go
    (a signal then exits at once, leaving them owed to the next process on the home).
    Returns the final state and, if a signal stopped it, the exit code it calls for
    (128 + the signal's number; none for the interrupt of ``conveyor cancel``, whose run
    ends as any cancelled run).
    """
    if observer is not None:
        engine.coordinator.observe(observer)
    children = ChildLocks(home)
    engine.coordinator.observe(children)
    lock = RunLock(home, run_id)
    with lock.held(), children:
        # One per stop signal heard: 128 + its number, or None for conveyor cancel's.
        exit_codes: list[int | None] = []
        running = asyncio.get_running_loop()
        background: set[asyncio.Task[Any]] = set()

        async def cancel(reason: str) -> str:
            # A signal during the start cancels the run once its log holds it.
            await engine.client.store.wait_for_events(run_id, 0, RECORDED_WITHIN)
            return await engine.client.cancel(run_id, reason)

        def interrupt(received: signal.Signals) -> None:
            if exit_codes:
                _quit_at_once(received, None)  # the second one: at once, whatever runs
            word, reason = STOP_SIGNALS[received]
            asker = _cancel_asked_by(lock) if received == signal.SIGINT else None
            if asker is not None:
                word, reason = f"asked to cancel ({asker})", f"cancelled ({asker})"
            exit_codes.append(None if asker is not None else 128 + received)
            on_interrupt(word)
            cancelling = running.create_task(cancel(reason))
            cancelling.add_done_callback(_log_failure)
            background.add(cancelling)

        for received in STOP_SIGNALS:
            running.add_signal_handler(received, interrupt, received)
        try:
            past_round = await start()
            background.add(running.create_task(_relay_signals(engine, home, run_id)))
            state = await engine.wait(run_id, past_round=past_round)
            await children.ended(engine)
        finally:
            for task in background:
                task.cancel()
            for received in STOP_SIGNALS:
                running.remove_signal_handler(received)
                # Shutting down may wait for a step that cannot be stopped: a signal
                # from here on quits at once.
                signal.signal(received, _quit_at_once)
        if notices is not None:
            await notices.delivered()
    # A cancel asked for elsewhere ends as any cancelled run does.
    return state, exit_codes[0] if exit_codes else None


class ChildLocks:
    """The locks of the child runs (of workflow steps) a run driven here starts: they
    are driven here too, and a server starting on the home must not take them up."""

    def __init__(self, home: Path) -> None:
        self._home = home
        self._held: dict[str, RunLock] = {}

    def __call__(self, event: Event, state: RunState) -> None:
        if isinstance(event, RunSubmitted) and event.parent is not None:
            lock = RunLock(self._home, event.run_id)
            if lock.acquire():
                self._held[event.run_id] = lock
        elif isinstance(event, RunCompleted) and event.run_id in self._held:
            self._held.pop(event.run_id).release()

    async def ended(self, engine: EmbeddedEngine) -> None:
        """Return once the child runs still going have ended: the run's end cancels
        them, and they must not be left running in the home."""
        # All at once, within one bound: a thousand children that do not end must not
        # hold the command a thousand times over.
        going = [engine.wait(run_id) for run_id in self._held]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*going), CHILDREN_END_WITHIN)

    def __enter__(self) -> ChildLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        for lock in self._held.values():
            lock.release()
        self._held.clear()


async def queue_for_driver(home: Path, workflow: str, kind: str, names: dict[str, Any]) -> str:
    """Put a command for a run (a signal, a cancel) in the home's trigger inbox, where the
    process that drives the run takes it: ``conveyor run`` relays signals for its run,
    an embedded server takes what is left there. Returns the key its record will bear."""
    store = SqliteTriggerStore(home / "conveyor.db")
    try:
        return await _queue(store, workflow, kind, names)
    finally:
        await store.close()


async def steer_through_server(home: Path, workflow: str, run_id: str, command: str) -> None:
    """Have the embedded server serving ``home`` cancel, retry or resume a run; returns
    once it has, raises ``InvalidInput`` with its reason if it refused."""
    store = SqliteTriggerStore(home / "conveyor.db")
    try:
        key = await _queue(store, workflow, STEER_KIND, {"run": run_id, "command": command})
        deadline = time.monotonic() + SERVER_ANSWERS_WITHIN
        while time.monotonic() < deadline:
            answer = next((r for r in await store.records(workflow, "-") if r.key == key), None)
            if answer is not None and answer.decision == "failed":
                raise InvalidInput([Problem(answer.reason)])
            if answer is not None:
                return
            await asyncio.sleep(SIGNAL_POLL)
    finally:
        await store.close()
    waited = f"{SERVER_ANSWERS_WITHIN:g}s"
    raise InvalidInput([Problem(f"the server of {home} did not take the {command} in {waited}")])


async def _queue(store: SqliteTriggerStore, workflow: str, kind: str, names: dict[str, Any]) -> str:
    key = uuid.uuid4().hex
    arrival = Arrival(
        workflow=workflow, version=0, trigger="-", kind=kind, key=key, names=names, at=0.0
    )
    await store.admit(arrival.idempotency_key, encode_arrival(arrival), keep=86400)
    return key


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


def interrupt_holder(home: Path, run_id: str, asker: str = "conveyor cancel") -> int | None:
    """Ask the process driving a local run to cancel it; its pid, or None if none does.
    ``asker`` (the command, the server's API) goes into the run's reason."""
    lock = RunLock(home, run_id)
    pid = lock.holder()
    if pid is not None:
        lock.cancel_note.write_text(asker)
        os.kill(pid, signal.SIGINT)
    return pid


def _cancel_asked_by(lock: RunLock) -> str | None:
    try:
        return lock.cancel_note.read_text().strip()[:100] or "conveyor cancel"
    except FileNotFoundError:
        return None  # a Ctrl-C


@contextlib.asynccontextmanager
async def local_engine(
    settings: Settings,
    *,
    workers: int | None = None,
    run_steps: bool = True,
    worker_grace: float | None = None,
    listened: bool = False,
) -> AsyncIterator[EmbeddedEngine]:
    """An embedded engine on the local home's run log and artifact store.

    Without ``run_steps`` it starts no workers: enough to record what the run's log
    calls for (a cancellation) without running anything. ``worker_grace``: how long
    steps still running when it stops may finish before they are handed back (by default
    ``conveyor.embedded.WORKER_GRACE``).
    ``listened``: a notifier in this process marks the run changes it has handled as
    announced (a server's), where nobody listens otherwise (``conveyor run``).
    """
    # Imported here, where a run is driven: the engine brings the step executors with
    # the broker's and an HTTP client (a quarter of a second to import), which commands
    # that only read or steer runs never use.
    from conveyor.embedded import WORKER_GRACE, EmbeddedEngine, default_worker_count

    store = SqliteRunLog(settings.home / "conveyor.db")
    try:
        async with EmbeddedEngine(
            store,
            workers=workers or default_worker_count(),
            artifacts=open_artifacts(settings),
            run_steps=run_steps,
            max_result_bytes=settings.max_result_bytes,
            worker_grace=WORKER_GRACE if worker_grace is None else worker_grace,
            listener_marks_announced=listened,
        ) as engine:
            yield engine
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def engine_for_run(
    settings: Settings,
    run_id: str,
    workflow: Workflow,
    *,
    workers: int | None = None,
    run_steps: bool = True,
    waiting: Callable[[int], None] = lambda _owed: None,
) -> AsyncIterator[tuple[EmbeddedEngine, LocalNotifications | None]]:
    """``local_engine`` for a command that drives one run of ``workflow``, with that
    run's ``notify:`` webhooks delivered from here if the workflow has any (the engine
    then leaves marking its changes announced to them). ``waiting``: see
    ``LocalNotifications``."""
    from conveyor.local_notify import notifications  # an HTTP client too (see local_engine)

    async with (
        local_engine(
            settings, workers=workers, run_steps=run_steps, listened=bool(workflow.notify)
        ) as engine,
        notifications(engine, settings.home, run_id, workflow, waiting) as notices,
    ):
        yield engine, notices
