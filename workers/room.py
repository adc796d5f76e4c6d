"""A worker's free slots as they change, for those who wait for them."""

from __future__ import annotations

import asyncio


class Room:
    """``any`` is set while a slot is free; ``until`` waits for a number of them."""

    def __init__(self, free: int) -> None:
        self.any = asyncio.Event()
        self._free = free
        self._waiting: dict[asyncio.Future[None], int] = {}
        self.update(free)

    def update(self, free: int) -> None:
        """Called whenever the free slots change."""
        self._free = free
        if free > 0:
            self.any.set()
        else:
            self.any.clear()
        for waiter, wanted in self._waiting.items():
            if free >= wanted and not waiter.done():
                waiter.set_result(None)

    async def until(self, slots: int) -> None:
        """Returns once at least ``slots`` slots are free."""
        if self._free >= slots:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[waiter] = slots
        try:
            await waiter
        finally:
            del self._waiting[waiter]
