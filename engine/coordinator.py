"""The coordinator: appends events to run logs, folds them, and carries out decisions.

For every event it receives it (1) appends it to the run's log, (2) folds it into the
run's state, (3) asks the pure core what to do, (4) appends those decisions, and only
then (5) carries out the side effects they call for (``engine.effects``): a dispatch
is durable before its message exists (outbox order). The incoming message is acked
after all of that (``engine.intake``).

Each run is pinned to the coordinator shard its submission names (``engine.shards``).
A shard queue has a single active consumer, so extra coordinators are hot standbys;
whoever consumes a shard rebuilds the unfinished runs of it it lacks (``ShardWake``).

A started attempt holds a lease its worker's heartbeats renew (``engine.leases``); one
not renewed within ``heartbeat_timeout`` is declared lost and runs again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from contracts.codec import CoordinatorInput, encode
from contracts.errors import ConveyorError, NotFound
from contracts.events import Event, RunCompleted, RunSubmitted
from contracts.messages import Heartbeat, ResumeRun, ShardWake
from contracts.ports import ArtifactStore, RunLog, Timers, Transport
from contracts.signing import Role
from contracts.supervision import Supervisor, stop_loops
from contracts.topology import ShardMap, shard_queue
from contracts.validation import check_submission
from engine.announce import ANNOUNCE_AGAIN_AFTER, AnnounceLevel, Announcer
from engine.appended import AppendedEvents
from engine.claims import hydrate
from engine.effects import DISPATCH_BATCH, Effects
from engine.held import HeldRuns
from engine.intake import ShardIntake
from engine.leases import Leases
from engine.recovery import Attempt, Resend, dispatched_again, index_from_log, last_dispatches
from engine.shards import WATCH_INTERVAL, ShardQueues
from engine.snapshots import Snapshots
from engine.state import fold, new_state, settle, snapshot
from engine.state.decide import lost_with_their_process
from engine.state.model import RunState
from engine.state.reporters import refusal
from engine.state.subflows import children_running
from engine.timers import LoopTimers
from engine.tracing import run_span
from engine.waiters import RunWaiters

log = structlog.get_logger("conveyor.coordinator")

Observer = Callable[[Event, RunState], None]
TimersFactory = Callable[[Callable[[Event], Any]], Timers]


class Coordinator:
    def __init__(
        self,
        transport: Transport,
        runlog: RunLog,
        *,
        shards: int = 1,
        shard_watch_interval: float = WATCH_INTERVAL,
        clock: Callable[[], float] = time.time,
        timers: TimersFactory | None = None,
        prefetch: int = 64,
        heartbeat_timeout: float | None = None,
        wake_interval: float | None = None,
        snapshot_every: int = 500,
        artifacts: ArtifactStore | None = None,
        dispatch_batch: int = DISPATCH_BATCH,
        announce: AnnounceLevel = AnnounceLevel.RUNS,
        marks_announced: bool = True,
    ) -> None:
        self._transport = transport
        self._runlog = runlog
        self._clock = clock
        self._timers: Timers = (timers or (lambda fire: LoopTimers(fire, clock)))(
            self.publish_event
        )
        self._leases = Leases(heartbeat_timeout) if heartbeat_timeout is not None else None
        self._effects = Effects(
            transport,
            self._timers,
            self._leases,
            pinned=self._pinned,
            clock=clock,
            dispatch_batch=dispatch_batch,
            artifacts=artifacts,
            send_event=self.publish_event,
        )
        # A broker that counts deliveries (quorum queues) dead-letters a message that
        # keeps failing, across coordinator restarts; else the intake counts itself.
        broker_counts = getattr(transport, "delivery_limit", None) is not None
        self._intake = ShardIntake(self, prefetch, count_failures=not broker_counts)
        self.supervisor = Supervisor("coordinator")
        # ``shards``: how many there are when the run log holds no shard map yet.
        self._shard_queues = ShardQueues(
            transport,
            runlog,
            self._intake.consume,
            default=shards,
            prefetch=prefetch,
            supervisor=self.supervisor,
            watch_interval=shard_watch_interval,
        )
        self._wake_interval = wake_interval
        self._artifacts = artifacts
        self._held = HeldRuns()
        self._appended = AppendedEvents()
        self._snapshots = Snapshots(runlog, snapshot_every)
        self._retaken: set[str] = set()  # unfinished runs taken up here, their steps lost
        self._waiters = RunWaiters()
        self.announcer = Announcer(transport, announce, runlog, marks=marks_announced)
        """Publishes the state changes of the runs handled here; its
        ``announce_unannounced`` sends those a stopped coordinator left."""
        self._observers: list[Observer] = [self.announcer, run_span]
        self._on_recover: list[Callable[[RunState], None]] = []
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self._timers.start()
        await self._shard_queues.start()
        if self._leases is not None:
            expiry = self._leases.declare_lost(self._clock, self.publish_event)
            self._loops.append(asyncio.create_task(expiry, name="leases"))
        if self._wake_interval is not None:
            wakes = self._shard_queues.wake_every(self._wake_interval, self._clock)
            self._loops.append(asyncio.create_task(wakes, name="wake"))
        for loop in self._loops:
            self.supervisor.watch(loop)
        shards = self._shard_queues.map
        log.info("coordinator started", shards=shards.count, queues=shards.queues)

    async def stop(self) -> None:
        await self._shard_queues.stop()
        await stop_loops(self._loops)
        self._loops.clear()
        await self._timers.close()
        await self.announcer.drain()

    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def refresh_shards(self) -> ShardMap:
        """Read the shard map now, not at the next look, and consume any new shard queue."""
        return await self._shard_queues.refresh()

    def observe(self, observer: Observer) -> None:
        """Call ``observer(event, state)`` after every event folded into a live run."""
        self._observers.append(observer)

    def on_recover(self, hook: Callable[[RunState], None]) -> None:
        """Call ``hook(state)`` when an unfinished run is rebuilt from its log here, before
        its dispatched tasks are sent again (no new events: observers do not see them)."""
        self._on_recover.append(hook)

    def forget_all(self) -> None:
        """Drop every run held in memory; they are rebuilt from their logs when next needed.

        Called when the broker connection was lost: another coordinator may have
        advanced our runs meanwhile.
        """
        self._held.clear()
        if self._leases is not None:
            self._leases.clear()

    async def wait(self, run_id: str, *, past_round: int = -1) -> RunState:
        """Wait until the run completes here, in a round after ``past_round`` (a retried
        run completes once per round); returns its final state."""
        done = self._held.finished(run_id)
        if done is not None and done.round > past_round:
            return done
        return await self._waiters.add(run_id, past_round)

    def is_finished(self, run_id: str) -> bool:
        return self._held.finished(run_id) is not None

    async def publish_event(self, event: Event) -> None:
        """Send an event of the coordinator's own (a timer, a lost attempt) to its run's shard."""
        shard = self._pinned(event.run_id, await self._shard_named(event.run_id))
        await self._transport.publish(shard_queue(shard), [encode(event)])

    def _pinned(self, run_id: str, named: int | None) -> int:
        """The shard a run lives on under the current map (``named``: the one its
        submission named, if any)."""
        return self._shard_queues.map.pinned(run_id, named)

    async def _shard_named(self, run_id: str) -> int | None:
        """The shard a run's submission named (a run not held here: from its index row)."""
        if state := self._held.get(run_id):
            return state.shard
        summary = await self._runlog.summary(run_id)
        return summary.shard if summary is not None else None

    # -- what the intake hands over --------------------------------------------------

    def holds(self, run_id: str, shard: int | None = None) -> bool:
        """Whether the run is unfinished and held here (on ``shard``, if one is named)."""
        state = self._held.live(run_id)
        return state is not None and shard in (None, self._pinned(run_id, state.shard))

    def drives(self, run_id: str) -> bool:
        """Whether the unfinished run is driven here: held, or being rebuilt from its log
        (a moment in which ``holds`` is false). Another engine must not take it up."""
        return self._held.driving(run_id)

    async def handle_group(self, events: list[Event]) -> bool:
        run_id = events[0].run_id
        try:
            with structlog.contextvars.bound_contextvars(run_id=run_id):
                state = self._held.live(run_id)
                assert state is not None, "only runs held here are grouped"
                await self._apply(state, events)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch handling failed; handling its events one by one")
            try:
                await self._reload(run_id)
            except Exception:  # the one-by-one path rebuilds it again, or dead-letters
                log.exception("rebuilding the run from its log failed")
            return False
        return True

    def groups(self, event: Event, shard: int, sender: Role | None) -> bool:
        state = self._held.live(event.run_id)
        return (
            state is not None
            and shard == self._pinned(event.run_id, state.shard)
            and refusal(state, event, sender) is None
        )

    async def handle(
        self, message: CoordinatorInput, shard: int | None = None, sender: Role | None = None
    ) -> None:
        if isinstance(message, Heartbeat):
            if self._leases is not None:
                self._leases.renew(message.attempts, self._clock())
        elif isinstance(message, ShardWake):
            await self._sweep(message.shard)
        elif isinstance(message, ResumeRun):
            with structlog.contextvars.bound_contextvars(run_id=message.run_id):
                await self._resume(message)
        else:
            await self.handle_event(message, shard, sender)

    async def handle_event(
        self, event: Event, shard: int | None = None, sender: Role | None = None
    ) -> None:
        """Append, fold, decide and act for one incoming event (off queue ``shard``, from
        ``sender``: ``engine.state.reporters`` says who may report on which step)."""
        run_id = event.run_id
        state = self._held.get(run_id)
        if shard is not None and not await self._belongs(event, shard):
            return
        if state is None:
            state = await self._recover(run_id)
        if state is None:
            if not isinstance(event, RunSubmitted):
                log.warning("event for an unknown run dropped", event_id=event.id)
                return
            try:
                check_submission(run_id, event.workflow, dict(event.params))
            except ConveyorError as exc:
                self._waiters.refused(run_id, exc)  # their run will never start
                raise
            state = new_state(event)
            log.info("run submitted", workflow=state.workflow.name, tasks=len(state.nodes))
            await self._apply(state, [event], folded=True)
        else:
            if why := refusal(state, event, sender):
                raise ConveyorError(why, retryable=False)
            await self._apply(state, [event])

    async def _belongs(self, event: Event, shard: int) -> bool:
        """Whether an event off ``shard`` is for a run pinned there (only its own shard's
        coordinator ever holds a run; a second submission elsewhere is a duplicate)."""
        pinned = await self._shard_named(event.run_id)
        if isinstance(event, RunSubmitted):
            if pinned is not None and pinned != shard:
                log.info("run already submitted to another shard", shard=pinned)
                return False
            pinned = event.shard
        if pinned is None or pinned == shard:
            return True
        raise ConveyorError(
            f"run {event.run_id} is pinned to shard {pinned}: its {event.kind}"
            f" does not belong on shard {shard}",
            retryable=False,
        )

    # -- the core loop ----------------------------------------------------------------

    async def _apply(self, state: RunState, events: list[Event], *, folded: bool = False) -> None:
        """Fold incoming events, decide, and make both durable in one log round trip.

        The decisions are appended only if every incoming event was new: then the state
        they were made on is the log's. Otherwise (a redelivery, or an append whose
        answer was lost) the log knows more than we do, and the run is rebuilt from it.
        Only once all of it is durable are its side effects carried out (outbox order).
        """
        if not folded and events:
            fresh = self._appended.fresh(events)
            if not fresh:
                return  # redelivered after a lost ack: in the log and in this state already
            events = fresh
        try:
            if not folded:
                for event in events:
                    fold(state, await hydrate(event, self._artifacts))
            decisions = settle(state)
            if not events and not decisions:
                return
            added = await self._runlog.append(state.run_id, events, then=decisions)
        except BaseException:
            # The state may now be ahead of the log: never keep it. Whoever handles
            # these events again starts from the log.
            self._held.forget(state.run_id)
            raise
        if not all(added):
            # Decisions are a function of the state: one already in the log means our
            # state was behind the log.
            log.debug("events already in the log; rebuilding the run from it")
            # What this process decided before was carried out: send nothing again.
            await self._reload(state.run_id, resend="none")
            return
        self._held.remember(state)
        durable = [*events, *decisions]
        self._appended.note(durable)
        for event in durable:
            self._notify(event, state)
        await self._carry_out(durable, state)
        await self._snapshots.maybe(state)
        await self.announcer.room()  # before taking in more: bounded, none dropped

    async def _carry_out(self, durable: list[Event], state: RunState) -> None:
        failures = await self._effects.carry_out(durable, state)
        if state.finished and any(isinstance(event, RunCompleted) for event in durable):
            await self._completed(state)
        if not failures:
            return
        # Steps that could not be rendered failed: record that, then decide again.
        for failure in failures:
            await self._runlog.append(state.run_id, [failure])
            fold(state, failure)
            self._notify(failure, state)
        await self._apply(state, [])

    async def _completed(self, state: RunState) -> None:
        log.info("run completed", state=state.status, reason=state.reason)
        await self._snapshots.ended(state)
        self._retaken.discard(state.run_id)
        self._waiters.ended(state)

    # -- runs held in memory ------------------------------------------------------------

    async def _reload(self, run_id: str, *, resend: Resend = "unsent") -> None:
        self._held.forget(run_id)
        await self._recover(run_id, resend=resend)

    async def _recover(self, run_id: str, *, resend: Resend = "unsent") -> RunState | None:
        """Rebuild a run this coordinator does not hold from its log, and catch up,
        sending again the task messages ``resend`` names (``engine.recovery``)."""
        # Dropped (a reload) or not yet held, the run is driven here all the same.
        with self._held.rebuilding(run_id):
            try:
                blob, events = await self._runlog.load(run_id)
            except NotFound:
                return None
            if blob is not None:
                state = snapshot.load(blob)
            else:
                first = events.pop(0)
                assert isinstance(first, RunSubmitted)
                state = new_state(first)
            unsent = last_dispatches(events, state)  # the first, if popped, is an input
            for event in events:
                fold(state, await hydrate(event, self._artifacts))
            await index_from_log(self._runlog, self.announcer, state)
            self._snapshots.rebuilt(state)
            self._held.remember(state)
        if state.finished:
            return state
        log.info("run recovered from its log", events=state.events_folded)
        for hook in self._on_recover:
            hook(state)
        await self._effects.arm_timers(state)
        if self._leases is not None:
            self._leases.grant_running(state, self._clock())
        if resend != "none":
            await self._resend(state, None if resend == "all" else unsent)
        await self._apply(state, [])
        return state

    async def _resend(self, state: RunState, only: set[Attempt] | None) -> None:
        await self._carry_out(dispatched_again(state, only), state)

    async def _resume(self, message: ResumeRun) -> None:
        # With its steps, the process that ran it lost its queues: what it had
        # dispatched and not started is sent again, and what it was running has failed.
        if message.steps_lost and message.run_id in self._retaken:
            return  # a second resume: the steps it runs now are this process's own
        resend: Resend = "all" if message.steps_lost else "unsent"
        state = self._held.live(message.run_id)
        if state is None:
            state = await self._recover(message.run_id, resend=resend)
        elif resend == "all" and not state.finished:  # taken up already, by a sweep
            await self._resend(state, None)
        if state is None or state.finished or not message.steps_lost:
            return
        self._retaken.add(message.run_id)
        # Its child runs died with it: taken up with it, not started all over again.
        for child in children_running(state):
            if self._held.live(child) is None:
                with structlog.contextvars.bound_contextvars(run_id=child):
                    await self._resume(ResumeRun(run_id=child, at=message.at, steps_lost=True))
        lost = lost_with_their_process(state, message.at)
        if lost:
            await self._apply(state, lost)

    def _notify(self, event: Event, state: RunState) -> None:
        for observer in self._observers:
            try:
                observer(event, state)
            except Exception:
                log.exception("observer failed")

    # -- liveness --------------------------------------------------------------------

    async def _sweep(self, shard: int) -> None:
        """Take up every unfinished run of ``shard`` that this coordinator does not hold,
        and announce the shard's run changes left unannounced a while."""
        for run_id in await self._runlog.running(shard):
            if self._held.live(run_id) is None:
                with structlog.contextvars.bound_contextvars(run_id=run_id):
                    await self._recover(run_id)
        await self.announcer.announce_unannounced(
            shard, before=self._clock() - ANNOUNCE_AGAIN_AFTER
        )
