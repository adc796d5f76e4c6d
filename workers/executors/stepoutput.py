"""What a Python step running in the worker prints becomes its log lines.

A step run in a thread or on the event loop shares the worker's ``sys.stdout`` and
``sys.stderr``. Both are replaced, once, by streams that send each line written by a
step to that step's log (found through a context variable, which the step's thread
inherits) and pass everything else through to the real stream. Lines written in a
thread are handed to the event loop, which owns the log buffer.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from typing import Any, TextIO

from workers.executors.base import LogEmitter

_current: contextvars.ContextVar[StepLines | None] = contextvars.ContextVar(
    "conveyor_step_lines", default=None
)


class StepLines:
    """One attempt's stdout and stderr, split into lines for its emitter."""

    def __init__(self, emit: LogEmitter) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._pending = {"stdout": "", "stderr": ""}

    def write(self, stream: str, text: str) -> None:
        lines = (self._pending[stream] + text).split("\n")
        self._pending[stream] = lines.pop()
        for line in lines:
            self._send(stream, line)

    def _send(self, stream: str, line: str) -> None:
        if threading.get_ident() == self._loop_thread:
            self._emit(stream, line)
        else:
            self._loop.call_soon_threadsafe(self._emit, stream, line)

    def close(self) -> None:
        """Send what is left without a newline (called on the loop, after the step)."""
        for stream, rest in self._pending.items():
            if rest:
                self._emit(stream, rest)
        self._pending = {"stdout": "", "stderr": ""}


class _StepStream:
    """Stands in for sys.stdout or sys.stderr."""

    def __init__(self, name: str, real: TextIO) -> None:
        self._name = name
        self._real = real

    def write(self, text: str) -> int:
        lines = _current.get()
        if lines is None:
            return self._real.write(text)
        lines.write(self._name, text)
        return len(text)

    def flush(self) -> None:
        if _current.get() is None:
            self._real.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty, ...
        return getattr(self._real, name)


def capture(emit: LogEmitter) -> tuple[StepLines, contextvars.Token[StepLines | None]]:
    """Route this context's prints (and its threads', started after) to ``emit``."""
    if not isinstance(sys.stdout, _StepStream):
        sys.stdout = _StepStream("stdout", sys.stdout)
    if not isinstance(sys.stderr, _StepStream):
        sys.stderr = _StepStream("stderr", sys.stderr)
    lines = StepLines(emit)
    return lines, _current.set(lines)


def release(lines: StepLines, token: contextvars.Token[StepLines | None]) -> None:
    _current.reset(token)
    lines.close()
