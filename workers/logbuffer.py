"""Batches step output lines into the task-log store: line by line in, a few writes out."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import structlog

from contracts.ports import LogLine, TaskLogStore
from contracts.supervision import stop_loops

log = structlog.get_logger("conveyor.worker")

STDERR_TAIL = 5
"""Lines of a failed attempt's stderr that travel with its failure, for the summary."""


class AttemptLines:
    """Records one attempt's output lines; keeps the last few of its stderr at hand."""

    __slots__ = ("_emit", "stderr_tail")

    def __init__(self, emit: Callable[[str, str], None], tail: deque[str]) -> None:
        self._emit = emit
        self.stderr_tail = tail

    def __call__(self, stream: str, text: str) -> None:
        self._emit(stream, text)


class LogBuffer:
    """Collects lines from every running step; flushes every ``interval`` or ``max_lines``."""

    def __init__(
        self,
        store: TaskLogStore,
        clock: Callable[[], float],
        *,
        interval: float = 0.2,
        max_lines: int = 500,
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._max_lines = max_lines
        self._pending: list[LogLine] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="log-flusher")

    def emitter(self, run_id: str, task: str, index: int, attempt: int) -> AttemptLines:
        tail: deque[str] = deque(maxlen=STDERR_TAIL)

        def emit(stream: str, text: str) -> None:
            if stream == "stderr":
                tail.append(text)
            self._pending.append(
                LogLine(
                    run_id=run_id,
                    task=task,
                    index=index,
                    attempt=attempt,
                    stream=stream,
                    at=self._clock(),
                    text=text,
                )
            )
            if len(self._pending) >= self._max_lines:
                self._wake.set()

        return AttemptLines(emit, tail)

    async def flush(self) -> None:
        if not self._pending and not self._lock.locked():
            return  # nothing to write and no write under way that holds a caller's lines
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            try:
                await self._store.write_lines(batch)
            except Exception:
                # Lines are not worth an outcome: the step's result still goes out.
                log.exception("output lines could not be stored; they are lost", lines=len(batch))

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing step logs failed; will retry")

    async def close(self) -> None:
        if self._task is not None:
            await stop_loops([self._task])
        await self.flush()
