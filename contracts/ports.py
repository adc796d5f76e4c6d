"""The abstract interfaces (Protocols) of the engine's backends.

Each has an in-memory twin and one or more real adapters; the same behaviour tests
run against all of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import msgspec

from contracts.errors import ConveyorError
from contracts.events import ArtifactRef, Event
from contracts.topology import ShardMap


class Delivery(Protocol):
    """One received message. Settle it exactly once: ack, or nack with or without requeue."""

    body: bytes
    redelivered: bool
    headers: Mapping[str, Any]

    @property
    def settleable(self) -> bool:
        """False once the channel it came on is gone: the broker has taken it back (to
        send it again), and settling it changes nothing."""
        ...

    async def ack(self) -> None: ...

    async def nack(self, *, requeue: bool) -> None: ...


@asynccontextmanager
async def processing(delivery: Delivery) -> AsyncIterator[Delivery]:
    """The one way to settle a delivery.

    Ack when the block finishes (its consequence is durable by then); on an error that
    is not retryable, reject without requeue (the message goes to the dead-letter
    queue); on any other error, requeue it for redelivery.
    """
    try:
        yield delivery
    except ConveyorError as exc:
        await delivery.nack(requeue=exc.retryable)
        raise
    except BaseException:
        await delivery.nack(requeue=True)
        raise
    else:
        await delivery.ack()


class Consumer(Protocol):
    """Deliveries from one queue, at most ``prefetch`` unsettled at a time."""

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    def ready(self, limit: int) -> Sequence[Delivery]:
        """Deliveries that can be had right now without waiting (at most ``limit``)."""
        ...

    async def drain(self) -> None:
        """Ask for no more deliveries; returns once none will come. Iteration ends after
        the deliveries sent before, and every delivery can be settled until ``close``."""
        ...

    async def reopen(self, prefetch: int) -> None:
        """After ``drain``: deliver again, at most ``prefetch`` new ones unsettled (those
        from before count no more). Iterate the consumer anew."""
        ...

    async def close(self) -> None:
        """Stop receiving; deliveries not yet settled return to the queue, redelivered."""
        ...


class Listener(Protocol):
    """Broadcasts of one topic, from the moment ``ready()`` returns."""

    async def ready(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """A message broker: durable queues with acks, plus fire-and-forget broadcasts."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self, queue: str, bodies: Sequence[bytes], headers: Mapping[str, str] | None = None
    ) -> None:
        """Enqueue messages in order; returns once the broker holds them durably."""
        ...

    async def consume(self, queue: str, *, prefetch: int) -> Consumer: ...

    async def broadcast(self, topic: str, body: bytes) -> None:
        """Best-effort delivery to every current listener of ``topic``."""
        ...

    def listen(self, topic: str) -> Listener: ...

    async def announce(
        self, routing_key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish a state change on the state-changes topic exchange (durably, to
        every bound queue; dropped if none is bound)."""
        ...

    async def bind_announcements(self, queue: str, pattern: str) -> None:
        """Have durable ``queue`` receive the state changes whose key matches ``pattern``."""
        ...


class Timers(Protocol):
    """Events due at a time (retry backoff): delivered to the coordinator when due.

    Scheduling the same event (by id) twice keeps one timer.
    """

    async def start(self) -> None: ...

    async def schedule(self, due: float, event: Event) -> None: ...

    async def close(self) -> None: ...


class RunSummary(msgspec.Struct, kw_only=True):
    """A row of the run index: enough to list and filter runs without reading their logs."""

    run_id: str
    workflow: str
    state: str
    submitted_at: float
    finished_at: float | None = None
    reason: str = ""
    trigger: str = ""
    """What started the run: cli, api, webhook:push, schedule:nightly, ..."""
    shard: int | None = None
    """The coordinator shard the run is pinned to."""


class LogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line a step printed, kept per task attempt."""

    run_id: str
    task: str
    index: int
    attempt: int
    stream: str
    """``stdout``, ``stderr`` or ``system`` (messages from the worker about the step)."""
    at: float
    text: str


LogPosition = tuple[str, int, int, int]
"""A place in a run's lines in page order: (task, item index, attempt, lines of that
attempt already read)."""


class LogPage(msgspec.Struct, frozen=True, kw_only=True):
    """Lines of a run in page order: task by name, then item, then attempt, then as
    printed."""

    lines: list[LogLine]
    next: LogPosition | None
    """Where the next page starts; ``None`` once every line stored so far was read."""


class RunLog(Protocol):
    """The event-sourced log of every run, and the index of runs derived from it."""

    async def append(
        self, run_id: str, events: Sequence[Event], *, then: Sequence[Event] = ()
    ) -> list[bool]:
        """Append events in order; returns, per event, whether it was new.

        An event whose id is already in the log is not appended again. ``then`` are
        appended after ``events`` only if every one of ``events`` was new (decisions
        made on a state that includes them); the returned list covers them too, all
        False when they were not appended. One round trip either way.

        A run's log starts with its submission: events for a run whose log is empty
        (never submitted, or deleted) are not appended, and all come back False. So a
        late result of a deleted run's attempt does not bring a shard of it back.
        """
        ...

    async def read(self, run_id: str, after: int = 0, *, limit: int | None = None) -> list[Event]:
        """The run's events from position ``after`` on (0-based; ``after`` events skipped),
        at most ``limit`` of them.

        A follower passes how many events it has seen so far and gets only what is
        new. Raises NotFound for a run with no events (checked when ``after`` is 0).
        """
        ...

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> bool:
        """Wait until the run's log holds more than ``after`` events; False on timeout.

        Pushed where the backend can push (in-process appends, Redis stream reads);
        polled where it cannot (another process writing the same SQLite file).
        """
        ...

    async def load(self, run_id: str) -> tuple[bytes | None, list[Event]]:
        """The run's latest state snapshot, if any, and the events after it."""
        ...

    async def save_snapshot(self, run_id: str, state: bytes) -> bool:
        """Keep ``state`` as the snapshot of everything appended to the run so far."""
        ...

    async def running(self, shard: int | None = None) -> list[str]:
        """Ids of runs not finished yet (for recovery sweeps); with ``shard``, only
        the runs pinned to that coordinator shard."""
        ...

    async def summary(self, run_id: str) -> RunSummary | None:
        """The run's index row (None for a run not in the index)."""
        ...

    async def reindex(self, row: RunSummary) -> bool:
        """Make ``row``, what its run's log says, the run's index row (only its state,
        end and reason, for a run that has a row) if the row says otherwise, and keep
        the run changes owed an announcement (``unannounced``) that were to be kept
        with it; True if it did. Where the row is written in a round trip after the
        events (Redis), a process that died in between left both behind; rebuilding a
        run from its log puts them right. Where all is written together, there is
        nothing to do."""
        ...

    async def unannounced(
        self, shard: int | None = None, *, before: float | None = None
    ) -> list[Event]:
        """The run state changes (submissions and completions) appended and not marked
        ``announced`` yet, oldest first; with ``shard``, of the runs pinned there; with
        ``before``, only those stamped earlier. A coordinator that stopped before the
        broker took them, or whose broker refused them, left them here."""
        ...

    async def announced(self, event_ids: Sequence[str]) -> None:
        """Mark run state changes announced: the broker took them (or, announcements
        being off, nobody will)."""
        ...

    async def shard_map(self, default: int) -> ShardMap:
        """The stored shard map; the first caller stores one of ``default`` shards."""
        ...

    async def reshard(self, count: int) -> ShardMap:
        """Spread new runs over ``count`` shards from now on (atomic; returns the new
        map). Runs already submitted stay where they are."""
        ...

    async def runs(
        self,
        *,
        state: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        trigger: str | None = None,
        since: float | None = None,
        until: float | None = None,
        top_level: bool = False,
    ) -> list[RunSummary]:
        """Runs newest first; ``before`` = (submitted_at, run_id) of the last row of the
        previous page: only runs after it in that order (a cursor). ``trigger`` is what
        started them (``webhook:push``, or a kind: ``webhook``); ``since``/``until``
        bound their submission time; ``top_level`` leaves out child runs (those a
        workflow step started)."""
        ...

    async def find_run(self, prefix: str) -> str:
        """The full id of the run whose id starts with ``prefix``; raises NotFound."""
        ...

    async def close(self) -> None: ...


class TaskLogStore(Protocol):
    """Output lines of task attempts, kept outside the event stream."""

    async def write_lines(self, lines: Sequence[LogLine]) -> None: ...

    async def read_lines(
        self, run_id: str, task: str | None = None, index: int | None = None
    ) -> list[LogLine]:
        """The run's lines in the order they were printed; of one task, and of one item of
        it, if asked (reading one item of a 100,000-item task reads that item only)."""
        ...

    async def page_lines(
        self,
        run_id: str,
        task: str | None = None,
        index: int | None = None,
        attempt: int | None = None,
        *,
        after: LogPosition | None = None,
        limit: int,
    ) -> LogPage:
        """Up to ``limit`` lines from ``after`` on, in page order, of one task, item or
        attempt if asked. A page reads the attempts it returns, not the whole run: paging
        through a 100,000-item task costs each page its own lines."""
        ...


class RunStore(RunLog, TaskLogStore, Protocol):
    """A backend holding both run logs and task logs (the embedded SQLite file, Redis)."""

    async def delete(self, run_id: str) -> bool:
        """Remove a finished run for good: its events, snapshot, index row and task
        lines. False for a run the log does not hold; raises Conflict for one still
        running. A crash part way leaves the index row, so deleting again finishes."""
        ...


def run_artifacts(run_id: str) -> str:
    """The folder of an artifact store that holds everything a run's steps stored."""
    return f"runs/{run_id}"


class ArtifactStore(Protocol):
    """Where artifacts and oversized results live; events carry only references."""

    async def put_path(self, key: str, local: Path) -> ArtifactRef:
        """Store a file or a directory; raises a non-retryable StepError past the size limit."""
        ...

    async def get_path(self, ref: ArtifactRef, local: Path) -> None:
        """Fetch an artifact to ``local`` (a directory artifact becomes a directory)."""
        ...

    async def fetch_url(self, url: str, local: Path) -> None: ...

    async def put_bytes(self, key: str, data: bytes) -> ArtifactRef: ...

    async def get_bytes(self, ref: ArtifactRef) -> bytes: ...

    async def read_range(self, uri: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of a stored object from ``start`` (empty past its end)."""
        ...

    async def put_named(self, key: str, data: bytes) -> None:
        """Write (or overwrite) a small object found by its key, not by a reference."""
        ...

    async def get_named(self, key: str) -> bytes | None:
        """What ``put_named`` wrote under ``key``, or None."""
        ...

    async def remove(self, key: str) -> int:
        """Delete everything stored under the folder ``key`` (a run's artifacts are
        under ``runs/<run id>``); returns how many objects went. Nothing there: 0."""
        ...


class TriggerRecord(msgspec.Struct, kw_only=True):
    """One decision about something that arrived for a trigger, kept to be looked at."""

    at: float
    workflow: str
    trigger: str
    kind: str
    """webhook, schedule, queue, sensor (or backfill)."""
    decision: str
    """accepted, duplicate, filtered, rejected, failed, fired, skipped, buffered."""
    reason: str = ""
    run_id: str | None = None
    key: str | None = None
    """The delivery id, nominal time, message id or object the decision is about."""


class TriggerStore(Protocol):
    """What the trigger runtime keeps: registered workflows (every version), an inbox of
    admitted arrivals (deliveries, ticks, objects) until they are handled, the record of
    decisions, and sensor cursors. Shared by every server replica of one home."""

    async def register(self, name: str, document: bytes) -> int:
        """Store a workflow document; its version (a document seen before keeps its own)."""
        ...

    async def workflow(self, name: str, version: int | None = None) -> tuple[int, bytes]:
        """A registered version (the latest by default); raises NotFound."""
        ...

    async def workflows(self) -> dict[str, int]:
        """Every registered workflow's name and latest version."""
        ...

    async def admit(self, key: str, payload: bytes, *, keep: float) -> bool:
        """Put an arrival in the inbox unless ``key`` was admitted in the last ``keep``
        seconds; True if admitted now (False: a duplicate)."""
        ...

    async def pending(self, *, older_than: float = 0.0) -> list[tuple[str, bytes]]:
        """Admitted arrivals not yet settled, admitted at least ``older_than`` s ago."""
        ...

    async def settle(self, key: str) -> None:
        """The arrival is handled: out of the inbox (its key still deduplicates)."""
        ...

    async def record(self, record: TriggerRecord) -> None: ...

    async def records(
        self, workflow: str, trigger: str | None = None, *, limit: int = 100
    ) -> list[TriggerRecord]:
        """The latest decisions, newest first."""
        ...

    async def cursor(self, key: str) -> bytes | None: ...

    async def set_cursor(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...
