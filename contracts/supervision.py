"""Background loops a process cannot work without, and what happens when one ends.

A worker whose intake loop died, or a coordinator whose shard consumer did, would stay
up doing nothing while holding its place (a shard queue's single active consumer stays
registered; a pool looks served). A loop that ends while its owner is not stopping is
therefore a failure: reported once, so the process exits and its supervisor (systemd,
Kubernetes) starts it again, instead of lingering.

Stopping loops on purpose goes through ``stop_loops``, which does not trust one cancel
to end a task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import structlog

log = structlog.get_logger("conveyor.supervision")

CANCEL_AGAIN_AFTER = 0.5
"""Seconds a cancelled loop has to end before it is cancelled again."""


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

    def fail(self, reason: str) -> None:
        """Report a failure (the first one counts), as when a watched loop ends: how a
        failure of a part the owner cannot work without (its engine) becomes its own."""
        if self.stopping or self.failure is not None:
            return
        self.failure = reason
        log.error("an essential loop ended", owner=self.owner, reason=reason)
        for listener in self._listeners:
            listener(reason)

    def _ended(self, loop: Loop) -> None:
        if self.stopping or self.failure is not None or loop.cancelled():
            return
        error = loop.exception()
        self.fail(
            f"{self.owner}: its loop {loop.get_name()} ended"
            + (f": {type(error).__name__}: {error}" if error is not None else "")
        )


class Stoppable(Loop, Protocol):
    """What ``stop_loops`` needs of an ``asyncio.Task``."""

    def done(self) -> bool: ...

    def cancel(self, msg: Any | None = None) -> bool: ...

    def get_loop(self) -> Any: ...

    def remove_done_callback(self, fn: Callable[[Any], object], /) -> int: ...


S = TypeVar("S", bound=Stoppable)


async def stop_loops(
    loops: Iterable[S],
    *,
    within: float | None = None,
    spare: Callable[[S], bool] | None = None,
) -> list[S]:
    """Cancel ``loops`` and return once every one has ended.

    One cancel is not always enough: on Python 3.11, ``asyncio.wait_for`` returns the
    awaited result instead of raising when the cancel and that result arrive in the same
    turn of the event loop, and redis-py wraps every write in it. A loop polling Redis
    then swallows its cancel about every other time and runs on, and a stop that waited
    for it would wait forever. A loop still running ``CANCEL_AGAIN_AFTER`` seconds after
    its cancel is cancelled again, until it ends; except one that ``spare`` names (it
    is finishing what its cancel started, and a second cancel would cut that short).

    With ``within``, the wait ends after that many seconds however it stands: the loops
    still running then (code that catches every cancel) are returned, left behind.
    """
    loops = list(loops)
    for loop in loops:
        loop.cancel()
    left: list[S] = []
    deadline = None if within is None or not loops else loops[0].get_loop().time() + within
    for loop in loops:
        while not await _ended_within(loop, CANCEL_AGAIN_AFTER):
            if deadline is not None and loop.get_loop().time() >= deadline:
                left.append(loop)
                break
            if spare is not None and spare(loop):
                continue
            log.warning("a loop ran on after its cancel; cancelling again", loop=loop.get_name())
            loop.cancel()
        if loop.done() and not loop.cancelled():
            loop.exception()  # looked at: never reported as an exception not retrieved
    return left


async def _ended_within(loop: Stoppable, seconds: float) -> bool:
    """Whether ``loop`` has ended, waiting up to ``seconds`` (timed by its own event loop:
    the contracts start none of their own)."""
    if loop.done():
        return True
    event_loop = loop.get_loop()
    waiter = event_loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_done_callback(wake)
    timer = event_loop.call_later(seconds, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        loop.remove_done_callback(wake)
    return loop.done()
