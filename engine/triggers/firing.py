"""From an arrival to a run: admit it durably, then decide and start the run.

Every way in (a webhook delivery, a schedule tick, a sensed object, a queue message)
becomes an ``Arrival``: what came, for which registered workflow version and trigger,
under a key that names it. Admission puts it in the trigger store's inbox once per key
(a redelivery is a duplicate); handling evaluates ``when`` and ``params`` over what
came, starts the run under a run id derived from the key (so handling twice, by two
replicas or after a crash, still makes one run), records the decision, and settles
the arrival. Arrivals left in the inbox by a process that died are handled by
``sweep``, on any replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from contracts.errors import ConveyorError, ExpressionError, InvalidInput, NotFound, Problem
from contracts.expressions import Expression, render_value
from contracts.ports import TriggerRecord, TriggerStore
from contracts.spec import Workflow
from contracts.triggers import ScheduleTrigger, SensorTrigger, Trigger
from contracts.validation import resolve_params
from engine.client import Client
from engine.runids import run_id_of
from engine.tracing import arrival_span
from engine.triggers.registry import Registry

log = structlog.get_logger("conveyor.triggers")

SIGNAL_KIND = "signal"
"""Arrivals that carry a signal from the command line to the run's server."""
STEER_KIND = "steer"
"""Arrivals that carry ``conveyor cancel``, ``retry`` or ``resume`` from the command line
to the embedded server that drives the home's runs."""
KEEP_KEYS = 7 * 86400.0
"""How long a delivery key deduplicates (a sender's redelivery days later is still one
run)."""
CANCELLED_BY_CLI = "cancelled (conveyor cancel)"
"""The reason of a run that ``conveyor cancel`` stopped."""
STALE_AFTER = 10.0
"""An arrival still in the inbox this long after admission was dropped by its process."""


class Arrival(msgspec.Struct, kw_only=True):
    workflow: str
    version: int
    trigger: str
    kind: str
    key: str
    """Names the arrival within its trigger: delivery id, nominal time, object, message id."""
    names: dict[str, Any]
    """What the trigger's expressions read: body, headers, query, event, nominal, ..."""
    at: float
    origin: str = ""
    """Who fired it, when not the trigger itself (``conveyor backfill``, the API's fire
    by hand): the reason its trigger-log line gives."""

    @property
    def idempotency_key(self) -> str:
        return f"{self.kind}:{self.workflow}:{self.trigger}:{self.key}"

    @property
    def run_id(self) -> str:
        return run_id_of(self.idempotency_key)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Arrival).decode


class Firing:
    """Admits arrivals and turns them into runs, recording every decision."""

    def __init__(
        self,
        store: TriggerStore,
        client: Client,
        *,
        clock: Callable[[], float] = time.time,
        keep: float = KEEP_KEYS,
        record_timeout: float = 10.0,
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.workflows = registry if registry is not None else Registry(store)
        self._clock = clock
        self._keep = keep
        self._record_timeout = record_timeout
        self.on_decision: list[Callable[[TriggerRecord], None]] = []
        """Called with every decision recorded (metrics)."""

    async def admit(self, arrival: Arrival) -> bool:
        """Durably take in an arrival; False (and a ``duplicate`` record) if its key was
        admitted before."""
        if await self.store.admit(arrival.idempotency_key, _encode(arrival), keep=self._keep):
            return True
        await self.record(arrival, "duplicate", f"already received: run {arrival.run_id}")
        return False

    async def check(self, arrival: Arrival) -> str | None:
        """Why the arrival cannot start a run (a bad body, a bad parameter), or None."""
        try:
            _, workflow = await self.workflows.get(arrival.workflow, arrival.version)
            _params(workflow, workflow.trigger(arrival.trigger), arrival)
        except (ExpressionError, InvalidInput, KeyError) as exc:
            return _reason(exc)
        return None

    async def handle(self, arrival: Arrival) -> TriggerRecord:
        attributes = {
            "conveyor.workflow": arrival.workflow,
            "conveyor.trigger": arrival.trigger,
            "conveyor.key": arrival.key,
        }
        with arrival_span(f"{arrival.kind} {arrival.trigger}", arrival.run_id, attributes):
            return await self._handle(arrival)

    async def _handle(self, arrival: Arrival) -> TriggerRecord:
        """Decide and start the run of an admitted arrival, record it, settle it.

        Raises only when the run could not be sent (the engine is unreachable): the
        arrival then stays in the inbox for the next sweep.
        """
        if arrival.kind == SIGNAL_KIND:
            return await self._forward_signal(arrival)
        if arrival.kind == STEER_KIND:
            return await self._forward_steering(arrival)
        try:
            _, workflow = await self.workflows.get(arrival.workflow, arrival.version)
            trigger = workflow.trigger(arrival.trigger)
            params = _params(workflow, trigger, arrival)
        except (ExpressionError, InvalidInput, KeyError) as exc:
            record = await self.record(arrival, "failed", _reason(exc))
            await self.store.settle(arrival.idempotency_key)
            return record
        signal = getattr(trigger.source, "signal", None)
        if params is None:
            record = await self.record(arrival, "filtered", "'when' is false")
        elif signal is not None:
            record = await self._signal(arrival, trigger, signal, params)
        else:
            await self.client.submit(
                workflow,
                params,
                trigger=f"{arrival.kind}:{arrival.trigger}",
                idempotency_key=arrival.idempotency_key,
                workflow_version=arrival.version,
            )
            # Sent is not kept: the arrival leaves the inbox only once the run's log
            # holds it (an embedded engine's queue dies with its process).
            await self.recorded(arrival.run_id)
            decision = "fired" if arrival.kind == "schedule" else "accepted"
            record = await self.record(arrival, decision, arrival.origin, run_id=arrival.run_id)
        await self.store.settle(arrival.idempotency_key)
        return record

    async def _signal(
        self, arrival: Arrival, trigger: Trigger, signal: str, data: dict[str, Any]
    ) -> TriggerRecord:
        run_text = getattr(trigger.source, "run", None)
        assert run_text is not None
        try:
            run = str(Expression(run_text).evaluate(arrival.names))
            run_id = await self.client.signal(
                run, signal, data, key=arrival.idempotency_key, sender=arrival.idempotency_key
            )
        except (ExpressionError, InvalidInput, NotFound) as exc:
            return await self.record(arrival, "failed", str(exc))
        return await self.record(arrival, "signalled", f"signal {signal!r}", run_id=run_id)

    async def _forward_signal(self, arrival: Arrival) -> TriggerRecord:
        """A signal queued by the command line for the server that drives the run."""
        names = arrival.names
        try:
            run_id = await self.client.signal(
                str(names["run"]), str(names["signal"]), names.get("data"), key=arrival.key
            )
            record = await self.record(
                arrival, "signalled", f"signal {names['signal']!r}", run_id=run_id
            )
        except (InvalidInput, NotFound) as exc:
            record = await self.record(arrival, "failed", str(exc))
        await self.store.settle(arrival.idempotency_key)
        return record

    async def _forward_steering(self, arrival: Arrival) -> TriggerRecord:
        """``conveyor cancel``, ``retry`` or ``resume`` of a local run, queued by the
        command line for the embedded server of its home (whose steps died with a process
        that drove the run before, so a resumed run runs them again)."""
        run, command = str(arrival.names["run"]), arrival.names.get("command")
        try:
            if command == "cancel":
                run_id, done = await self.client.cancel(run, CANCELLED_BY_CLI), "cancelled"
            elif command == "retry":
                run_id, done = (await self.client.retry(run)).run_id, "retried"
            elif command == "resume":
                run_id, done = await self.client.resume(run, steps_lost=True), "resumed"
            else:
                raise InvalidInput([Problem(f"no such command {command!r}")])
            record = await self.record(arrival, done, f"conveyor {command}", run_id=run_id)
        except (InvalidInput, NotFound) as exc:
            record = await self.record(arrival, "failed", str(exc))
        await self.store.settle(arrival.idempotency_key)
        return record

    async def recorded(self, run_id: str) -> None:
        """Once the run's log holds it; raises (retryable) if that takes too long."""
        deadline = time.monotonic() + self._record_timeout
        store = self.client.store
        while not await store.wait_for_events(run_id, 0, max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise ConveyorError(
                    f"run {run_id} was sent but not recorded within {self._record_timeout:g}s"
                    " (is a coordinator running?)",
                    retryable=True,
                )

    async def admit_and_handle(self, arrival: Arrival) -> TriggerRecord | None:
        if not await self.admit(arrival):
            return None
        return await self.handle(arrival)

    async def sweep(self, older_than: float = STALE_AFTER, *, kind: str | None = None) -> int:
        """Handle arrivals a process admitted and did not get to (of one ``kind``, if
        named); how many."""
        handled = 0
        for key, payload in await self.store.pending(older_than=older_than):
            try:
                arrival = _decode(payload)
            except msgspec.DecodeError:
                log.error("unreadable arrival in the trigger inbox", key=key)
                await self.store.settle(key)
                continue
            if kind is not None and arrival.kind != kind:
                continue
            try:
                await self.handle(arrival)
                handled += 1
            except ConveyorError as exc:
                # The engine is not answering: the rest would wait for it too. Next round.
                log.warning("arrivals not handled yet", key=key, error=str(exc))
                break
        return handled

    async def record(
        self, arrival: Arrival, decision: str, reason: str = "", *, run_id: str | None = None
    ) -> TriggerRecord:
        record = TriggerRecord(
            at=self._clock(),
            workflow=arrival.workflow,
            trigger=arrival.trigger,
            kind=arrival.kind,
            decision=decision,
            reason=reason,
            run_id=run_id,
            key=arrival.key,
        )
        await self.store.record(record)
        for hook in self.on_decision:
            hook(record)
        log.info(
            "trigger decision",
            workflow=arrival.workflow,
            trigger=arrival.trigger,
            decision=decision,
            reason=reason,
            run_id=run_id,
            key=arrival.key,
        )
        return record


def _params(workflow: Workflow, trigger: Trigger, arrival: Arrival) -> dict[str, Any] | None:
    """The run's parameters from what arrived, or None when ``when`` says no."""
    source = trigger.source
    names = arrival.names
    when = getattr(source, "when", None)
    if when is not None and not Expression(when).evaluate(names):
        return None
    given: dict[str, Any] = {}
    if isinstance(source, SensorTrigger) and source.python is not None:
        given = dict(names.get("params") or {})  # the sensor function's run request
    for name, value in source.params.items():
        try:
            if isinstance(source, ScheduleTrigger):
                given[name] = render_value(value, names)
            else:
                given[name] = Expression(value).evaluate(names)
        except ExpressionError as exc:
            raise ExpressionError(f"param {name!r}: {exc}") from exc
    if getattr(source, "signal", None) is not None:
        return given  # the signal's data
    return resolve_params(workflow, given, source=f"trigger {trigger.name}")


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"the workflow has no trigger {exc.args[0]!r} (any more)"
    return str(exc)


def encode_arrival(arrival: Arrival) -> bytes:
    return _encode(arrival)


def decode_arrival(payload: bytes) -> Arrival:
    return _decode(payload)
