"""The client: the one way to start, steer and watch runs.

The command line, the server's API and triggers, the embedded engine and the tests
submit, cancel, retry, resume and read runs here, on either home: embedded (in-memory
transport, SQLite or memory log) or distributed (RabbitMQ, Redis). A command is an event
sent to the run's coordinator shard, which records it in the run's log: the only place
anyone learns what happened, and the only way this module knows a run's state.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from contracts.codec import encode
from contracts.errors import ConveyorError, InvalidInput, NotFound, Problem
from contracts.events import (
    Event,
    RunCancelRequested,
    RunRetryRequested,
    RunSubmitted,
    SignalReceived,
)
from contracts.messages import ResumeRun
from contracts.ports import (
    ArtifactStore,
    LogLine,
    LogPage,
    LogPosition,
    RunStore,
    RunSummary,
    Transport,
    run_artifacts,
)
from contracts.spec import Workflow
from contracts.submitted import workflow_of
from contracts.topology import DEFAULT_SHARDS, ShardMap, shard_queue
from contracts.vocabulary import RunStatus
from engine.logfollow import LineFollower, LinesRead
from engine.runfamily import run_with_children
from engine.runids import check_prefix, new_run_id, run_id_of
from engine.state import fold, new_state, snapshot
from engine.state.model import RunState

Observer = Callable[[Event, RunState], None]
FOLLOW_WAIT = 2.0
"""Longest single wait of a follower for new events before it looks again."""
FOLLOW_PAGE = 10_000
"""Events a follower reads at a time: a page of a million-item run's 3,000,000."""
STATES_KEPT = 8
"""Run states a client keeps to bring up to date instead of rebuilding (``state``)."""
SHARD_MAP_KEPT = 2.0
"""Seconds a client submits by the shard map it read before reading it again (a run
sent by an older map is still consumed: the map's queues never shrink)."""


class Client:
    """``Client(store, transport)``: reads come from ``store``; commands go over ``transport``.

    Without a transport the client can only read (``show``, ``runs``, ``logs`` on a
    home whose engine is not running here).
    """

    def __init__(
        self,
        store: RunStore,
        transport: Transport | None = None,
        *,
        shards: int = DEFAULT_SHARDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._transport = transport
        self._shards = shards
        """How many shards there are when the store holds no shard map yet."""
        self._clock = clock
        self._map: tuple[float, ShardMap] | None = None
        self._states: OrderedDict[str, RunState] = OrderedDict()

    # -- commands --------------------------------------------------------------------

    async def submit(
        self,
        workflow: Workflow,
        params: dict[str, Any],
        *,
        trigger: str = "cli",
        idempotency_key: str | None = None,
        workflow_version: int | None = None,
        run_id: str | None = None,
    ) -> str:
        """Send a run to its coordinator shard; returns the run id.

        The same idempotency key always gives the same run id, and the coordinator
        appends the submission only once. ``run_id``: chosen by the caller beforehand
        (``new_run_id()``; without a key).
        """
        if run_id is None:
            run_id = run_id_of(idempotency_key) if idempotency_key is not None else new_run_id()
        shard = (await self.shard_map()).shard_for(run_id)
        event = RunSubmitted(
            run_id=run_id,
            at=self._clock(),
            workflow=workflow.model_dump(mode="json", exclude_unset=True, by_alias=True),
            params=params,
            trigger=trigger,
            idempotency_key=idempotency_key,
            workflow_version=workflow_version,
            shard=shard,
        )
        await self._send(shard, encode(event))
        return run_id

    async def shard_map(self) -> ShardMap:
        """The shard map new runs are submitted by (read again every few seconds)."""
        now = time.monotonic()
        if self._map is None or now - self._map[0] > SHARD_MAP_KEPT:
            self._map = (now, await self.store.shard_map(self._shards))
        return self._map[1]

    async def reshard(self, count: int) -> ShardMap:
        """Spread new runs over ``count`` coordinator shards from now on, while everything
        runs: runs already submitted finish on their shards; coordinators start
        consuming new shard queues when they next read the map."""
        self._map = None
        return await self.store.reshard(count)

    async def cancel(self, run: str, reason: str = "cancelled by user") -> str:
        """Ask a running run to stop (its running steps are killed); returns its full id."""
        state = await self.state(run)
        if state.finished:
            raise InvalidInput([Problem(f"run {state.run_id} already {state.status}")])
        await self._send(
            await self._shard(state),
            encode(RunCancelRequested(run_id=state.run_id, at=self._clock(), reason=reason)),
        )
        return state.run_id

    async def retry(self, run: str) -> RunState:
        """Re-run the failed part of a finished run; returns the state it was retried from."""
        state = await self.state(run)
        if not state.finished:
            raise InvalidInput([Problem(f"run {state.run_id} is still running")])
        if state.status == RunStatus.SUCCEEDED:
            raise InvalidInput([Problem(f"run {state.run_id} succeeded: nothing to retry")])
        event = RunRetryRequested(run_id=state.run_id, at=self._clock(), round=state.round + 1)
        await self._send(await self._shard(state), encode(event))
        return state

    async def resume(self, run: str, *, steps_lost: bool = False) -> str:
        """Have the run's coordinator take up an unfinished run (after its process died).

        ``steps_lost``: the steps it was running died too (a local run), so they run again.
        """
        state = await self.state(run)
        if state.finished:
            raise InvalidInput([Problem(f"run {state.run_id} already {state.status}")])
        resume = ResumeRun(run_id=state.run_id, at=self._clock(), steps_lost=steps_lost)
        await self._send(await self._shard(state), encode(resume))
        return state.run_id

    async def signal(
        self, run: str, name: str, data: Any = None, *, key: str | None = None, sender: str = ""
    ) -> str:
        """Send a signal to a run: its wait steps waiting for ``name`` succeed with
        ``data``. ``key`` names this sending (the same key twice is one signal)."""
        state = await self.state(run)
        if state.finished:
            raise InvalidInput([Problem(f"run {state.run_id} already {state.status}")])
        waits = sorted({n.spec.signal for n in state.nodes.values() if n.spec.signal})
        if name not in waits:
            raise InvalidInput(
                [
                    Problem(
                        f"run {state.run_id} waits for no signal {name!r}"
                        f" (its wait steps wait for: {', '.join(waits) or 'nothing'})"
                    )
                ]
            )
        event = SignalReceived(
            run_id=state.run_id,
            at=self._clock(),
            name=name,
            data=data,
            key=key or uuid.uuid4().hex,
            sender=sender,
        )
        await self._send(await self._shard(state), encode(event))
        return state.run_id

    async def delete(
        self,
        run: str,
        artifacts: ArtifactStore | None = None,
        *,
        deleted: Callable[[RunSummary], None] | None = None,
    ) -> str:
        """Delete a finished run for good: its log, its task lines and, given the store,
        its artifacts, and the same of the child runs under it; returns its full id. A
        run still running, or with a child run still running, is refused (Conflict).
        ``deleted`` hears of each run as it goes, children first."""
        run_id = await self.find(run)
        for row in await run_with_children(self.store, self.state, run_id):
            if artifacts is not None:  # first: a delete cut short leaves the run to find
                await artifacts.remove(run_artifacts(row.run_id))
            removed = await self.store.delete(row.run_id)
            self._states.pop(row.run_id, None)
            # Told once, by whichever deletion took it (a pruner's may overlap).
            if removed and deleted is not None:
                deleted(row)
        return run_id

    async def _shard(self, state: RunState) -> int:
        return (await self.shard_map()).pinned(state.run_id, state.shard)

    async def _send(self, shard: int, body: bytes) -> None:
        if self._transport is None:
            raise ConveyorError("this client has no transport: it can read runs, not steer them")
        await self._transport.publish(shard_queue(shard), [body])

    # -- reading -----------------------------------------------------------------------

    async def find(self, run: str) -> str:
        """The full id of a run given its id or a unique prefix; raises NotFound."""
        check_prefix(run)
        return await self.store.find_run(run)

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
        return await self.store.runs(
            state=state,
            workflow=workflow,
            limit=limit,
            before=before,
            trigger=trigger,
            since=since,
            until=until,
            top_level=top_level,
        )

    async def events(self, run: str, after: int = 0, *, limit: int | None = None) -> list[Event]:
        """The run's events after the first ``after``, at most ``limit`` of them."""
        return await self.store.read(await self.find(run), after, limit=limit)

    async def event_pages(self, run_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        """The run's events after the first ``after`` as they are now, ``FOLLOW_PAGE`` at
        a time (a million-item run's log is three million events)."""
        while page := await self.store.read(run_id, after, limit=FOLLOW_PAGE):
            yield page
            after += len(page)

    async def lines(
        self, run: str, task: str | None = None, index: int | None = None
    ) -> list[LogLine]:
        """What the run's steps printed (of one task, of one item of it)."""
        return await self.store.read_lines(await self.find(run), task, index)

    async def line_page(
        self,
        run: str,
        task: str | None = None,
        index: int | None = None,
        attempt: int | None = None,
        *,
        after: LogPosition | None = None,
        limit: int = 5000,
    ) -> LogPage:
        """A page of what the run's steps printed (``TaskLogStore.page_lines``)."""
        return await self.store.page_lines(
            await self.find(run), task, index, attempt, after=after, limit=limit
        )

    async def workflow(self, run: str) -> Workflow:
        """The workflow the run was submitted with, read from its submission alone (no
        state is built: a 1,000,000-item run's takes most of a second)."""
        run_id = await self.find(run)
        first = await self.store.read(run_id, 0, limit=1)
        return workflow_of(_submission(run_id, first[0] if first else None).workflow)

    async def state(self, run: str) -> RunState:
        """The run's state now: its latest snapshot with the events after it folded in.

        The states of the runs read last are kept, and a later read folds in only the
        events appended since (rebuilding a 1,000,000-item run takes most of a second).
        The state returned is shared: read it, do not change it.
        """
        run_id = await self.find(run)
        kept = self._states.pop(run_id, None)
        if kept is not None:
            events = await self.store.read(run_id, kept.events_folded)
            state = kept
        else:
            blob, events = await self.store.load(run_id)
            state = snapshot.load(blob) if blob else _first_state(run_id, events.pop(0))
        for event in events:
            fold(state, event)
        self._states[run_id] = state
        while len(self._states) > STATES_KEPT:
            self._states.popitem(last=False)
        return state

    async def follow(
        self, run_id: str, after: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[list[Event]]:
        """Each batch of new events of the run from position ``after`` on, as appended.

        Ends only when ``timeout`` seconds have passed: the caller stops when it has seen
        what it wanted. Waits on the log (pushed or polled, as the backend can), never
        re-reads what it has seen.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = after
        while True:
            try:
                events = await self.store.read(run_id, seen, limit=FOLLOW_PAGE)
            except NotFound:
                events = []  # submitted, not yet recorded by its coordinator
            if events:
                seen += len(events)
                yield events
                continue
            wait = FOLLOW_WAIT
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            await self.store.wait_for_events(run_id, seen, wait)

    async def follow_lines(
        self,
        run_id: str,
        task: str | None = None,
        index: int | None = None,
        attempt: int | None = None,
        *,
        every: float,
        had: int = 0,
    ) -> AsyncGenerator[LinesRead]:
        """What the run's steps print (of one task, item or attempt) until the run ends:
        what is stored now, a page at a time, then what running attempts add, looked for
        every ``every`` seconds; each line read once (``engine.logfollow``).

        The last read of the stored lines, and each look, come with the place they
        answer for (``LineFollower.answered``); ``had`` takes up again from such a place.
        The run's log is read a page at a time too: a million-item run's is three
        million events.
        """
        follower = LineFollower(self.store, run_id, task, index, attempt)
        state: RunState | None = None
        read = 0
        async for past in self.event_pages(run_id):
            follower.read_past(past, had=had)
            state = _folded(run_id, state, past)
            read += len(past)
        held: list[LogLine] = []  # the last page gets the place, once all are read
        async for page in follower.begin_pages():
            if page:
                if held:
                    yield LinesRead(held, None)
                held = page
        yield LinesRead(held, follower.answered)
        del held

        def observe(event: Event, _state: RunState) -> None:
            follower.observe(event)

        # The last look is one that began after the run's end was noted: a step's lines
        # are stored before its outcome is sent, so that look reads all there will be.
        # (A look under way when the end comes reads only the attempts it began with.)
        ended = asyncio.create_task(self.watch(run_id, observe, start=(read, state)))
        try:
            last = False
            while not last:
                if not ended.done():
                    await asyncio.wait({ended}, timeout=every)
                last = ended.done()
                yield LinesRead(await follower.look(), follower.answered)
            ended.result()
        finally:
            ended.cancel()

    async def watch(
        self,
        run_id: str,
        observer: Observer | None = None,
        *,
        timeout: float | None = None,
        past_round: int = -1,
        start: tuple[int, RunState | None] = (0, None),
    ) -> RunState:
        """Follow a run until it has finished (a round after ``past_round``); its final state.

        ``observer(event, state)`` sees every event with the state it produced, except
        those the caller has folded already: ``start`` is their count, and the state
        they made.
        """

        def over(state: RunState) -> bool:
            # Only once caught up: a retried run's log holds an earlier completion.
            return state.finished and state.round > past_round

        after, state = start
        if state is not None and over(state):
            return state
        async for events in self.follow(run_id, after, timeout=timeout):
            for event in events:
                state = _first_state(run_id, event) if state is None else fold(state, event)
                if observer is not None:
                    observer(event, state)
            if state is not None and over(state):
                return state
        raise ConveyorError(f"run {run_id} did not finish in {timeout}s", retryable=True)


def _folded(run_id: str, state: RunState | None, events: Sequence[Event]) -> RunState | None:
    """``state`` (None before the run's first event) with ``events`` folded in."""
    for event in events:
        state = _first_state(run_id, event) if state is None else fold(state, event)
    return state


def _first_state(run_id: str, event: Event) -> RunState:
    return new_state(_submission(run_id, event))


def _submission(run_id: str, event: Event | None) -> RunSubmitted:
    if not isinstance(event, RunSubmitted):
        raise ConveyorError(f"the log of run {run_id} does not start with its submission")
    return event
