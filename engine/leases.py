"""Leases on started attempts: a worker's heartbeats renew them; an expired one is lost.

The coordinator grants a lease when an attempt a worker runs starts (or, on recovery,
to every such attempt the log says is running, as a grace period for its worker's next
beat) and releases it when the attempt's outcome arrives. An attempt whose lease is not
renewed within the timeout is declared lost and runs again. A wait step and a workflow
step's child run have no worker beating for them, and no lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog

from contracts.events import Event, TaskFailed
from contracts.vocabulary import AttemptRef, FailureKind
from engine.state.decide import running_on_workers
from engine.state.model import RunState

log = structlog.get_logger("conveyor.coordinator")


class Leases:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._renewed: dict[AttemptRef, float] = {}

    def __bool__(self) -> bool:
        return bool(self._renewed)

    def grant(self, ref: AttemptRef, now: float) -> None:
        self._renewed[ref] = now

    def grant_running(self, state: RunState, now: float) -> None:
        """Grant a lease to every attempt of the run a worker is running (a run taken up
        from its log: a grace period for each worker's next heartbeat)."""
        for ref in running_on_workers(state):
            self.grant(ref, now)

    def renew(self, refs: Iterable[AttemptRef], now: float) -> None:
        """Renew the leases of these attempts; one not held here is not taken up."""
        for ref in refs:
            if ref in self._renewed:
                self._renewed[ref] = now

    def release(self, ref: AttemptRef) -> None:
        self._renewed.pop(ref, None)

    def release_run(self, run_id: str) -> None:
        for ref in [ref for ref in self._renewed if ref.run_id == run_id]:
            del self._renewed[ref]

    def clear(self) -> None:
        self._renewed.clear()

    def expire(self, now: float) -> list[AttemptRef]:
        """Remove and return the leases not renewed for longer than the timeout."""
        expired = [ref for ref, seen in self._renewed.items() if now - seen > self.timeout]
        for ref in expired:
            del self._renewed[ref]
        return expired

    async def declare_lost(
        self, clock: Callable[[], float], publish: Callable[[Event], Awaitable[None]]
    ) -> None:
        """Every quarter of the timeout, declare the attempts whose lease expired lost:
        ``publish`` a failure of each to its run (until cancelled)."""
        while True:
            await asyncio.sleep(self.timeout / 4)
            now = clock()
            for ref in self.expire(now):
                log.warning(
                    "attempt lost: no heartbeat",
                    run_id=ref.run_id,
                    task=ref.task,
                    index=ref.index,
                    attempt=ref.attempt,
                )
                await publish(
                    TaskFailed(
                        run_id=ref.run_id,
                        at=now,
                        task=ref.task,
                        index=ref.index,
                        attempt=ref.attempt,
                        error=f"no heartbeat from its worker for {self.timeout:g}s",
                        reason=FailureKind.LOST,
                    )
                )
