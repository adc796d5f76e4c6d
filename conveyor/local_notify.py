"""The ``notify:`` webhooks of the runs a command drives on the local home.

``conveyor run``, ``resume`` and ``retry`` (and ``cancel`` of a run nothing drives)
deliver their run's webhooks from their own process, as an embedded server does for
the runs it drives: the coordinator publishes the run's changes into the process's
in-memory broker, a notifier delivers them and marks each one announced once it is
handled (delivered, or given up after its attempts). The command waits for that
before it exits.

A process killed before then leaves the changes owed in the home (``RunLog.unannounced``):
the next command that drives the run delivers them first, and so does the next
``conveyor server`` on the home, with the ``webhook-id`` each change had.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from contracts.ports import TriggerRecord
from contracts.spec import Workflow
from engine.triggers.notify import NOTIFY_QUEUE, Notifier
from engine.triggers.stores.sqlite import SqliteTriggerStore
from engine.triggers.webhooks import environment_secret

if TYPE_CHECKING:
    from conveyor.embedded import EmbeddedEngine

log = structlog.get_logger("conveyor.notify")

TELL_AFTER = 1.0
"""Seconds a command waits for its run's webhooks before it says what it waits for."""


class LocalNotifications:
    """Delivers the ``notify:`` webhooks of one run driven in this process."""

    def __init__(
        self,
        engine: EmbeddedEngine,
        home: Path,
        run_id: str,
        workflow: str,
        waiting: Callable[[int], None] = lambda _owed: None,
    ) -> None:
        """``workflow``: the run's workflow's name. ``waiting(owed)`` is told once, if
        the run's changes are still owed ``TELL_AFTER`` after the run ended."""
        self._engine = engine
        self._run_id = run_id
        self._workflow = workflow
        self._waiting = waiting
        self._store = SqliteTriggerStore(home / "conveyor.db")
        self._notifier = Notifier(
            engine.transport, engine.client, self._store, environment_secret, marks_handled=True
        )
        self.outcomes: list[TriggerRecord] = []
        """What became of each delivery this process made for the run, in order."""
        self._started = time.time()

    async def start(self) -> None:
        await self._notifier.start()
        # Owed by a process that drove the run before and died: sent first.
        await self._engine.coordinator.announcer.announce_unannounced(run_id=self._run_id)

    async def stop(self) -> None:
        await self._notifier.stop()
        await self._store.close()

    async def delivered(self) -> None:
        """Return once none of the run's changes is owed any more (or none can be handled
        here), with the ``outcomes`` of their deliveries."""
        await self._engine.coordinator.announcer.drain()  # all of them in the queue
        told = False
        while True:
            handled = self._notifier.handled  # before the look: no change slips between
            owed = [e for e in await self._engine.store.unannounced() if e.run_id == self._run_id]
            if not owed:
                break
            if not self._notifier.busy and not await self._engine.transport.queue_depth(
                NOTIFY_QUEUE
            ):
                # Handled, but its mark was not recorded: the next server sends it again.
                log.warning("run changes left unannounced", run_id=self._run_id, count=len(owed))
                break
            try:
                async with asyncio.timeout(None if told else TELL_AFTER):
                    await self._notifier.handled_beyond(handled)
            except TimeoutError:
                told = True
                self._waiting(len(owed))
        self.outcomes = await self._outcomes()

    async def _outcomes(self) -> list[TriggerRecord]:
        found = await self._store.records(self._workflow, "notify", limit=1000)
        mine = [r for r in found if r.run_id == self._run_id and r.at >= self._started]
        return mine[::-1]


@contextlib.asynccontextmanager
async def notifications(
    engine: EmbeddedEngine,
    home: Path,
    run_id: str,
    workflow: Workflow,
    waiting: Callable[[int], None] = lambda _owed: None,
) -> AsyncIterator[LocalNotifications | None]:
    """The run's notifications while ``engine`` drives it, if its workflow asks for any
    (``engine`` must then leave marking its changes announced to them:
    ``conveyor.local.engine_for_run`` makes both)."""
    if not workflow.notify:
        yield None
        return
    notices = LocalNotifications(engine, home, run_id, workflow.name, waiting)
    await notices.start()
    try:
        yield notices
    finally:
        await notices.stop()
