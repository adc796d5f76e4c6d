"""The executor chain: executors by step kind, wrapped by middleware.

Whatever applies to every kind of step (its time limit, the log context and trace of
the attempt, a test's fakes) is written once as middleware around the executors, so
no executor enforces it on its own and the worker special-cases none of them.

A middleware gets the step's typed input and the rest of the chain::

    async def middleware(call: StepCall, proceed: Proceed) -> StepOutcome:
        ...                      # before
        outcome = await proceed(call)
        ...                      # after
        return outcome
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Sequence

import structlog

from contracts.vocabulary import FailureKind
from workers.executors.base import Executor, StepOutcome
from workers.executors.call import Middleware, Proceed, StepCall
from workers.executors.secrets import reveal_secrets
from workers.tracing import trace_spans

_log = structlog.get_logger("conveyor.worker")


async def enforce_timeout(call: StepCall, proceed: Proceed) -> StepOutcome:
    """The one place a step's ``timeout`` is enforced, for every kind of step.

    The executor is cancelled when time is up, and stops what it started (kills the
    process tree, removes the container) before the timeout is reported.
    """
    limit = call.task.step.timeout
    if limit is None:
        return await proceed(call)
    try:
        async with asyncio.timeout(limit):
            return await proceed(call)
    except TimeoutError:
        return StepOutcome(
            ok=False, error=f"timed out after {limit:g}s", reason=FailureKind.TIMEOUT
        )


async def trace_attempt(call: StepCall, proceed: Proceed) -> StepOutcome:
    """The attempt's start and end, with how long it took and how it ended."""
    call.log.info("step started", kind=call.task.step.kind)
    started = time.monotonic()
    try:
        outcome = await proceed(call)
    except asyncio.CancelledError:
        # Cancelled, handed back or stopped: the worker reports why.
        call.log.info("step interrupted", duration=round(time.monotonic() - started, 3))
        raise
    call.log.info(
        "step finished",
        ok=outcome.ok,
        reason=None if outcome.ok else outcome.reason,
        duration=round(time.monotonic() - started, 3),
    )
    return outcome


DEFAULT_MIDDLEWARE: tuple[Middleware, ...] = (
    trace_attempt,
    trace_spans,
    reveal_secrets,
    enforce_timeout,
)


class ExecutorChain:
    """Runs a step with the executor of its kind, through the middleware, outermost first."""

    def __init__(
        self, executors: dict[str, Executor], middleware: Sequence[Middleware] = DEFAULT_MIDDLEWARE
    ) -> None:
        self._executors = executors
        proceed: Proceed = self._execute
        for layer in reversed(tuple(middleware)):
            # A partial, not a wrapper coroutine: each layer costs one frame per step.
            proceed = functools.partial(layer, proceed=proceed)
        self.run: Proceed = proceed
        """Run one step through the middleware, outermost first, to its executor."""

    def _unique(self) -> list[Executor]:
        # One executor may serve several kinds (scripts and commands are both processes).
        return list({id(e): e for e in self._executors.values()}.values())

    async def start(self) -> None:
        for executor in self._unique():
            await executor.start()

    async def stop(self) -> None:
        for executor in self._unique():
            await executor.stop()

    def _execute(self, call: StepCall) -> Awaitable[StepOutcome]:
        kind = call.task.step.kind
        executor = self._executors.get(kind)
        if executor is None:
            return _refused(f"this worker cannot run {kind!r} steps")
        return executor.run(call.task, call.emit, call.workdir)


async def _refused(error: str) -> StepOutcome:
    return StepOutcome(ok=False, error=error, reason=FailureKind.START)
