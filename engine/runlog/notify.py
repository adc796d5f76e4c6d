"""Waking readers in this process when a run's log grows (for logs with no push of their own)."""

from __future__ import annotations

import asyncio


class AppendSignal:
    """Followers of a run wait here; appends to the run wake them."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def notify(self, run_id: str) -> None:
        for waiter in self._waiters.pop(run_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, run_id: str, timeout: float) -> None:
        """Return on the next append to ``run_id`` or after ``timeout`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(run_id, set())
        waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            waiters.discard(waiter)
