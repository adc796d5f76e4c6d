"""The process of ``conveyor server``: uvicorn, with the stop signals left to Conveyor.

uvicorn raises a signal it caught again once its requests are done, which ends the
process before the engine behind it stops: an embedded server's steps ran on without it
and their runs stayed recorded as running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

from conveyor.cli.common import STOP_SIGNALS, say

if TYPE_CHECKING:
    import uvicorn

    from conveyor.server.runtime import TriggerRuntime

REQUESTS_GRACE = 10
"""Seconds a stopping server gives the requests in flight (a large artifact download)
before it cuts them off. Event and log streams end at once, cleanly
(``conveyor.server.streams``)."""


def web_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, leaving the signals to ``StopSignals``."""
    import uvicorn  # here: every other command starts faster without it

    class Web(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Web(config)


class StopSignals:
    """SIGTERM, SIGINT or SIGHUP stops the server: the requests in flight finish, then
    the triggers and the engine stop, running steps within their grace period. A second
    signal stops it at once (an embedded engine's running steps are handed back, to run
    again when a server next starts on this home).

    Heard from the moment the server starts: one that comes while it is starting (still
    connecting, or resuming runs) cancels the start, which stops what had started, rather
    than killing it half-started. Made in the task that starts the server.
    """

    def __init__(self, waiting: str) -> None:
        self._waiting = waiting
        self._heard = False
        self._web: uvicorn.Server | None = None
        self._runtime: TriggerRuntime | None = None
        self._starting = asyncio.current_task()
        self.cancelled_start = False
        """Whether a signal cancelled the start (the start's task then ends cancelled)."""
        running = asyncio.get_running_loop()
        for received in STOP_SIGNALS:
            running.add_signal_handler(received, self._on, received)

    def stop(self, web: uvicorn.Server, runtime: TriggerRuntime) -> None:
        """What the signals stop; at once if one came already."""
        self._web, self._runtime = web, runtime
        if self._heard:
            self._begin()

    def _on(self, received: signal.Signals) -> None:
        if not self._heard:
            self._heard = True
            again = "Ctrl-C" if received == signal.SIGINT else received.name
            say(f"stopping ({received.name}): {self._waiting} ({again} again: at once)")
            if self._web is not None:
                self._begin()
            elif self._starting is not None:
                self.cancelled_start = True
                self._starting.cancel()
            return
        say("stopping now")
        if self._web is None or self._runtime is None:
            signal.signal(received, signal.SIG_DFL)  # still starting: nothing to finish
            signal.raise_signal(received)
            return
        self._web.force_exit = True
        if self._runtime.hurry is not None:
            self._runtime.hurry()

    def _begin(self) -> None:
        assert self._web is not None and self._runtime is not None
        self._runtime.stopping.set()
        self._web.should_exit = True
