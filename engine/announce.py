"""Runs talk back: each state change, once durable in the run's log, is published as a
CloudEvent on the state-changes topic exchange, routing key ``run.<workflow>.<state>``
(and ``task.<workflow>.<state>`` when task changes are asked for).

Other services bind their own queues to the keys they care about; the server's
notifier delivers the ``notify:`` webhooks of workflows from one such queue.

Run changes are announced at least once: the run log keeps each one as unannounced
until the broker has confirmed it (``RunLog.unannounced``), and a coordinator that
starts after one stopped short publishes what was left, with the same CloudEvent id.
Task changes are announced at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec
import structlog

from contracts.codec import encode
from contracts.events import (
    Event,
    RetryScheduled,
    RunCompleted,
    RunSubmitted,
    TaskEvent,
    TaskFailed,
    TaskFailedByEngine,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
)
from contracts.ports import RunLog, Transport
from contracts.topology import shard_queue
from engine.runlog.index import owes_announcement
from engine.state.model import RunState
from engine.state.subflows import child_ended

log = structlog.get_logger("conveyor.announce")

CLOUDEVENT_TYPE_PREFIX = "dev.conveyor"
PUBLISH_ATTEMPTS = 5
PUBLISH_TIMEOUT = 10.0
ANNOUNCE_AGAIN_AFTER = 60.0
"""Seconds after which a run change still unannounced is published again by its shard's
coordinator, as it checks on the shard: its broker refused it (five times), and nothing
announces it otherwise until a coordinator starts. Past any publish still going on."""
IN_FLIGHT = 256
"""Announcements sent before their confirms are awaited. Confirmed one at a time, the
20,000 task changes of a 10,000-item fan-out were still being published 22-24 s after
its 3 s run ended; sent together, 5 s after."""
BACKLOG = 100_000
"""Changes waiting to be published past which the coordinator takes in nothing more until
fewer wait (about 75 MB of them). A 100,000-item fan-out with its task changes left
170,000 waiting on a broker slower than the run (125 MB); a million items, over 1 GB."""


class AnnounceLevel(StrEnum):
    NONE = "none"
    RUNS = "runs"
    """Run state changes: running, succeeded, failed, cancelled."""
    TASKS = "tasks"
    """Run and task state changes (every item of a fan-out: a message per change)."""


def _task_state(event: Event) -> str | None:
    if isinstance(event, TaskStarted):
        return "running"
    if isinstance(event, TaskSucceeded):
        return "succeeded"
    if isinstance(event, TaskFailed | TaskFailedByEngine):
        return "failed"
    if isinstance(event, TaskSkipped):
        return "skipped"
    if isinstance(event, RetryScheduled):
        return "retrying"
    return None


def cloud_event(
    event: Event, workflow: str, level: AnnounceLevel
) -> tuple[str, dict[str, Any]] | None:
    """The routing key and CloudEvent (JSON format, spec 1.0) of a state change of a run
    of ``workflow``, or None for an event that changes no state worth announcing at
    ``level``."""
    data: dict[str, Any] = {"run_id": event.run_id, "workflow": workflow}
    if isinstance(event, RunSubmitted):
        kind, new = "run", "running"
        data["trigger"] = event.trigger
    elif isinstance(event, RunCompleted):
        kind, new = "run", str(event.state)
        data["reason"] = event.reason
        if event.outputs is not None:
            data["outputs"] = event.outputs
    elif level == AnnounceLevel.TASKS and isinstance(event, TaskEvent):
        found = _task_state(event)
        if found is None:
            return None
        kind, new = "task", found
        data.update(task=event.task, index=event.index, attempt=event.attempt)
        error = getattr(event, "error", None)
        if error:
            data["error"] = error
    else:
        return None
    data["state"] = new
    subject = event.run_id if kind == "run" else f"{event.run_id}/{data['task']}/{data['index']}"
    document = {
        "specversion": "1.0",
        "id": event.id,
        "source": f"/conveyor/workflows/{workflow}",
        "type": f"{CLOUDEVENT_TYPE_PREFIX}.{kind}.{new}",
        "subject": subject,
        "time": datetime.fromtimestamp(event.at, UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }
    return f"{kind}.{workflow}.{new}", document


Told = tuple[str, list[bytes]]
"""A parent run's shard queue, and the end of its workflow step's attempt to send there."""


def _told(event: Event) -> Told | None:
    """What the end of a child run tells its parent (the parent waits on it: it goes
    out at least once, with the run's announcement, whatever the announce level)."""
    if not isinstance(event, RunCompleted) or event.parent is None:
        return None
    return shard_queue(event.parent.shard), [encode(child_ended(event))]


class Announcer:
    """A coordinator observer that publishes state changes in the order they happened,
    off the coordinator's path: a slow broker delays announcements, and holds runs back
    only once ``BACKLOG`` changes wait (``room``), so that none is dropped and the
    coordinator's memory stays bounded."""

    def __init__(
        self,
        transport: Transport,
        level: AnnounceLevel = AnnounceLevel.RUNS,
        runlog: RunLog | None = None,
        *,
        marks: bool = True,
    ) -> None:
        """``runlog``: where run changes are marked announced once the broker has them
        (without one, nothing is marked: a test's announcer). ``marks=False``: the
        broker keeps nothing (it is in memory), so its listener marks each change once
        it has handled it (an embedded server's notifier)."""
        self._transport = transport
        self._level = level
        self._runlog = runlog
        self._marks = marks
        self._queue: asyncio.Queue[tuple[str, str | None, bytes, str | None, Told | None]] = (
            asyncio.Queue()
        )
        """(run id, routing key or None, body, id to mark announced, what its parent run
        is told) of each state change not published yet."""
        self._owed: set[str] = set()
        """Ids of the run changes queued or being published here."""
        self._to_mark: list[str] = []
        """Ids of run changes published (or not to be) and not marked announced yet."""
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._sending = 0
        """Changes sent and not confirmed yet."""

    def __call__(self, event: Event, state: RunState) -> None:
        owed = owes_announcement(event)
        if self._level == AnnounceLevel.NONE:
            if _told(event) is not None:
                self._enqueue(event, state.workflow.name)  # its parent is told all the same
            elif owed and self._runlog is not None:
                self._to_mark.append(event.id)  # nobody will announce it
                self._wake()
            return
        if self._level == AnnounceLevel.RUNS and not owed:
            return  # the common case, decided before a document is put together
        self._enqueue(event, state.workflow.name)

    async def announce_unannounced(
        self, shard: int | None = None, *, before: float | None = None, run_id: str | None = None
    ) -> int:
        """Publish the run changes the log still holds as unannounced (of ``shard``,
        stamped before ``before``, of the run ``run_id``, if given): a coordinator
        stopped before the broker took them, or its broker refused them. Each goes with
        the CloudEvent id it had then; with announcements off, they are only marked.
        Returns how many are published again."""
        if self._runlog is None:
            return 0
        owed = await self._runlog.unannounced(shard, before=before)
        left = [e for e in owed if e.id not in self._owed and run_id in (None, e.run_id)]
        if self._level == AnnounceLevel.NONE:
            self._to_mark += [event.id for event in left if _told(event) is None]
            left = [event for event in left if _told(event) is not None]
            self._wake()
        workflows: dict[str, str] = {}
        for event in left:
            if event.run_id not in workflows:
                workflows[event.run_id] = await self._workflow_of(event)
            self._enqueue(event, workflows[event.run_id])
        if left:
            log.warning("announcing run changes left unannounced", count=len(left))
        return len(left)

    async def _workflow_of(self, event: Event) -> str:
        if isinstance(event, RunSubmitted):
            return str(event.workflow.get("name", "?"))
        assert self._runlog is not None
        summary = await self._runlog.summary(event.run_id)
        return summary.workflow if summary is not None else "?"

    def _enqueue(self, event: Event, workflow: str) -> None:
        on = self._level != AnnounceLevel.NONE
        found = cloud_event(event, workflow, self._level) if on else None
        told = _told(event)
        if found is None and told is None:
            return
        key, body = (found[0], msgspec.json.encode(found[1])) if found else (None, b"")
        marked_here = self._marks and self._runlog is not None
        mark = event.id if marked_here and owes_announcement(event) else None
        if mark is not None:
            self._owed.add(mark)
        self._queue.put_nowait((event.run_id, key, body, mark, told))
        if self._queue.qsize() >= BACKLOG and self._room.is_set():
            log.warning("state changes not published yet hold the runs back", waiting=BACKLOG)
            self._room.clear()
        self._wake()

    def _wake(self) -> None:
        if self._task is None or self._task.done():
            # In a context of its own: it publishes other runs' changes too, and the ids
            # bound where it was started would be on its lines about them.
            self._task = asyncio.get_running_loop().create_task(
                self._publish(), context=contextvars.Context()
            )

    async def _publish(self) -> None:
        while not self._queue.empty() or self._to_mark:
            ready = min(self._queue.qsize(), IN_FLIGHT)
            sending = [self._queue.get_nowait() for _ in range(ready)]
            self._sending = len(sending)
            # Sent in this order on one channel (the transport's publishes take turns in
            # the order they are started), their confirms awaited together. One sent
            # again after a failure can arrive after changes that came later.
            published = await asyncio.gather(
                *(
                    self._publish_one(run_id, key, body, told)
                    for run_id, key, body, _, told in sending
                )
            )
            self._sending = 0
            if self._queue.qsize() < BACKLOG:
                self._room.set()
            for (_, _, _, mark, _), done in zip(sending, published, strict=True):
                if mark is not None:
                    self._owed.discard(mark)  # not published: left for the next coordinator
                    if done:
                        self._to_mark.append(mark)
            await self._mark()

    async def _mark(self) -> None:
        if not self._to_mark or self._runlog is None:
            return
        marks, self._to_mark = self._to_mark, []
        try:
            await self._runlog.announced(marks)
        except Exception as exc:
            log.warning(
                "could not record run changes as announced: they will be announced again",
                count=len(marks),
                error=repr(exc),
            )

    async def room(self) -> None:
        """Return once fewer than ``BACKLOG`` changes wait (at once, nearly always)."""
        if not self._room.is_set():
            await self._room.wait()

    async def _publish_one(
        self, run_id: str, key: str | None, body: bytes, told: Told | None
    ) -> bool:
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    if told is not None:  # its parent first: what a run waits for
                        await self._transport.publish(*told)
                        told = None
                    if key is not None:
                        await self._transport.announce(key, body)
                return True
            except Exception as exc:  # the broker's errors are many; none may stop runs
                if attempt == PUBLISH_ATTEMPTS:
                    log.error("state change not announced", run_id=run_id, key=key, error=repr(exc))
                else:
                    await asyncio.sleep(0.1 * 2**attempt)
        return False

    async def drain(self, timeout: float = 5.0) -> None:
        """Publish what is queued (at shutdown), and say how many changes could not be."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        left = self._queue.qsize() + self._sending
        if left:
            log.error(
                "state changes not announced: stopped before the broker took them", count=left
            )
