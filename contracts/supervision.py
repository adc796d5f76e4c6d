"""Background loops a process cannot work without, and what happens when one ends.

A worker whose intake loop died, or a coordinator whose shard consumer did, would stay
up doing nothing while holding its place (a shard queue's single active consumer stays
registered; a pool looks served). A loop that ends while its owner is not stopping is
therefore a failure: reported once, so the process exits and its supervisor (systemd,
Kubernetes) starts it again, instead of lingering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog

log = structlog.get_logger("conveyor.supervision")


class Loop(Protocol):
    """What is watched of an ``asyncio.Task``."""

    def get_name(self) -> str: ...

    def cancelled(self) -> bool: ...

    def exception(self) -> BaseException | None: ...

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...


class Supervisor:
    """Watches the essential loops of one component (``owner``)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.stopping = False
        """Set before the owner ends its loops on purpose."""
        self.failure: str | None = None
        """Why a loop ended, once one did."""
        self._listeners: list[Callable[[str], None]] = []

    def watch(self, loop: Loop) -> None:
        loop.add_done_callback(self._ended)

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` when a loop fails (at once if one has)."""
        if self.failure is not None:
            listener(self.failure)
        else:
            self._listeners.append(listener)

    def _ended(self, loop: Loop) -> None:
        if self.stopping or self.failure is not None or loop.cancelled():
            return
        error = loop.exception()
        self.failure = f"{self.owner}: its loop {loop.get_name()} ended" + (
            f": {type(error).__name__}: {error}" if error is not None else ""
        )
        log.error("an essential loop ended", owner=self.owner, reason=self.failure)
        for listener in self._listeners:
            listener(self.failure)
