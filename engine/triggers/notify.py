"""Outbound webhooks: a workflow's ``notify:`` entries get its runs' state changes.

The notifier consumes the run state changes from its own durable queue bound to the
state-changes exchange (competing server replicas share it) and POSTs each change a
``notify`` entry asks for, as the CloudEvent it is, signed the Standard Webhooks way
when the entry names a secret. A failed delivery (connection error, 5xx, 408, 429) is
retried with exponential backoff up to the entry's ``attempts``; the message is
acknowledged once every delivery has succeeded or given up, and each outcome is
recorded (``conveyor trigger-log WORKFLOW notify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from contracts.errors import ConveyorError, NotFound
from contracts.ports import Delivery, Transport, TriggerRecord, TriggerStore
from contracts.supervision import stop_loops
from contracts.triggers import Notify
from engine.client import Client
from engine.triggers.signatures import standard_headers
from engine.triggers.webhooks import SecretLookup

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("conveyor.notify")

NOTIFY_QUEUE = "conveyor.notify"
FIRST_DELAY = 1.0
LONGEST_DELAY = 60.0
PERMANENT = frozenset(range(400, 500)) - {408, 429}
"""Answers that another try will not change."""
RUNS_REMEMBERED = 10_000
"""Runs whose ``notify`` entries are kept, so a run's submission is read once, not at
each of its changes."""


class Notifier:
    def __init__(
        self,
        transport: Transport,
        client: Client,
        store: TriggerStore,
        secrets: SecretLookup,
        *,
        clock: Callable[[], float] = time.time,
        first_delay: float = FIRST_DELAY,
        timeout: float = 10.0,
        concurrency: int = 16,
        marks_handled: bool = False,
    ) -> None:
        """``marks_handled``: mark each run change announced once handled, for a
        coordinator that leaves that to its listener (an embedded server's, whose broker
        is in memory); on RabbitMQ the coordinator marks it on the broker's confirm."""
        self._transport = transport
        self._client = client
        self._store = store
        self._secrets = secrets
        self._clock = clock
        self._first_delay = first_delay
        self._timeout = timeout
        self._concurrency = concurrency
        self._marks_handled = marks_handled
        self._task: asyncio.Task[None] | None = None
        self._handling: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._entries: OrderedDict[str, asyncio.Future[tuple[str, tuple[Notify, ...]]]] = (
            OrderedDict()
        )
        self.handled = 0
        """State changes handled so far: delivered, given up on, or not this home's."""
        self._progress = asyncio.Condition()

    async def start(self) -> None:
        await self._transport.bind_announcements(NOTIFY_QUEUE, "run.#")
        consumer = await self._transport.consume(NOTIFY_QUEUE, prefetch=self._concurrency)
        import httpx  # here: a process whose runs notify nobody never loads the client

        self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)

        async def consume() -> None:
            async for delivery in consumer:
                task = asyncio.get_running_loop().create_task(self._handle(delivery))
                self._handling.add(task)
                task.add_done_callback(self._handling.discard)

        self._consumer = consumer
        self._task = asyncio.create_task(consume(), name="notifier")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_loops([self._task])
        await stop_loops(self._handling)
        with contextlib.suppress(Exception):
            await self._consumer.close()
        if self._http is not None:
            await self._http.aclose()

    @property
    def busy(self) -> bool:
        """Whether a state change it has taken is still being handled."""
        return bool(self._handling)

    async def handled_beyond(self, count: int) -> None:
        """Return once more than ``count`` state changes have been handled."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.handled > count)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            change: dict[str, Any] = msgspec.json.decode(delivery.body)
            data = change["data"]
            run_id, new_state = str(data["run_id"]), str(data["state"])
        except (msgspec.DecodeError, KeyError, TypeError):
            log.error("unreadable state change; dropped")
            await delivery.ack()
            return
        try:
            name, entries = await self._entries_of(run_id)
        except NotFound:
            await delivery.ack()  # a run this home does not hold
            await self._handled(change)
            return
        except ConveyorError as exc:
            log.warning("run state not readable yet", run_id=run_id, error=str(exc))
            await delivery.nack(requeue=True)
            return
        wanted = [entry for entry in entries if new_state in entry.on]
        await asyncio.gather(
            *(self._deliver(entry, change, delivery.body, name) for entry in wanted)
        )
        await delivery.ack()
        await self._handled(change)

    async def _handled(self, change: dict[str, Any]) -> None:
        """Mark the change announced, where that is left to this notifier: its broker
        (in memory) keeps nothing a killed process had not delivered."""
        if self._marks_handled and "id" in change:
            try:
                await self._client.store.announced([str(change["id"])])
            except Exception as exc:
                log.warning("could not record a run change as handled", error=repr(exc))
        async with self._progress:
            self.handled += 1
            self._progress.notify_all()

    async def _entries_of(self, run_id: str) -> tuple[str, tuple[Notify, ...]]:
        """The run's workflow name and ``notify`` entries (fixed for the run's life). Its
        changes are handled side by side: the second waits for the first one's read."""
        reading = self._entries.get(run_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read_entries(run_id))
            self._entries[run_id] = reading
            if len(self._entries) > RUNS_REMEMBERED:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(run_id)
        try:
            return await asyncio.shield(reading)
        except ConveyorError:
            if self._entries.get(run_id) is reading:
                del self._entries[run_id]  # read again at the next change
            raise

    async def _read_entries(self, run_id: str) -> tuple[str, tuple[Notify, ...]]:
        workflow = await self._client.workflow(run_id)
        return workflow.name, tuple(workflow.notify)

    async def _deliver(self, entry: Notify, change: dict[str, Any], body: bytes, name: str) -> None:
        import httpx

        assert self._http is not None
        headers = {"content-type": "application/cloudevents+json", **entry.headers}
        outcome = ""
        for attempt in range(1, entry.attempts + 1):
            signed = dict(headers)
            if entry.secret_env:
                secret = self._secrets(entry.secret_env)
                if not secret:
                    outcome = f"no secret in ${entry.secret_env}: not sent"
                    break
                signed.update(standard_headers(secret, str(change["id"]), self._clock(), body))
            try:
                answer = await self._http.post(entry.url, content=body, headers=signed)
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= answer.status_code < 300:
                    await self._record(
                        name, change, entry, "delivered", f"HTTP {answer.status_code}", attempt
                    )
                    return
                outcome = f"HTTP {answer.status_code}"
                if answer.status_code in PERMANENT:
                    break
            if attempt < entry.attempts:
                await asyncio.sleep(min(LONGEST_DELAY, self._first_delay * 2 ** (attempt - 1)))
        await self._record(name, change, entry, "failed", outcome, attempt)

    async def _record(
        self,
        workflow: str,
        change: dict[str, Any],
        entry: Notify,
        decision: str,
        outcome: str,
        attempts: int,
    ) -> None:
        plural = "s" if attempts > 1 else ""
        what = f"{change['data']['state']} -> {entry.url}: {outcome}"
        await self._store.record(
            TriggerRecord(
                at=self._clock(),
                workflow=workflow,
                trigger="notify",
                kind="notify",
                decision=decision,
                reason=f"{what} ({attempts} attempt{plural})",
                run_id=str(change["data"]["run_id"]),
                key=str(change["id"]),
            )
        )
        log.info("notification", decision=decision, url=entry.url, outcome=outcome)
