"""Child processes for synchronous Python steps that must be stoppable.

A plain function called in a thread cannot be stopped: when its time is up or its run
is cancelled, the thread runs on. So a synchronous step with a timeout runs in a child
process instead (``workers.pychild``), one step at a time per child; children
are kept and reused step after step, since starting one costs an interpreter start.
Stopping a step kills its child's whole process group; the next step gets a new child.

What a step prints is recorded as its log lines (stdout and stderr), which the
in-thread path cannot do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

import msgspec

from workers.executors.base import LogEmitter

END_OF_STEP = "\x1e\x1fconveyor:end-of-step\x1f\x1e"
"""The child prints this line to stdout and stderr after each step: its output ends there."""

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Child:
    """One child process and the step it is running."""

    def __init__(self, proc: asyncio.subprocess.Process, answers: asyncio.StreamReader) -> None:
        self.proc = proc
        self._answers = answers
        self._emit: LogEmitter | None = None
        self._streams_done: dict[str, asyncio.Event] = {
            "stdout": asyncio.Event(),
            "stderr": asyncio.Event(),
        }
        self._readers = [
            asyncio.create_task(self._lines(proc.stdout, "stdout")),
            asyncio.create_task(self._lines(proc.stderr, "stderr")),
        ]

    @classmethod
    async def start(cls) -> Child:
        """A new child; a cancel that comes while it starts leaves neither the child nor
        the pipe of its answers behind."""
        read_fd, write_fd = os.pipe()
        answer_pipe = os.fdopen(read_fd, "rb", buffering=0)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-u",
                "-m",
                "workers.pychild",
                str(write_fd),
                END_OF_STEP,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,  # its own process group: killed with what it starts
                limit=1 << 24,
            )
        except BaseException:
            answer_pipe.close()
            raise
        finally:
            os.close(write_fd)
        answers = asyncio.StreamReader(limit=1 << 30)
        loop = asyncio.get_running_loop()
        try:
            # From here the pipe is the loop's to close, also when connecting it fails.
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(answers), answer_pipe)
        except BaseException:
            await cls(proc, answers).kill()  # its whole process group, as for any child
            raise
        return cls(proc, answers)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def call(self, request: dict[str, Any], emit: LogEmitter) -> dict[str, Any]:
        """Run one step; its answer once every line it printed has been recorded."""
        assert self.proc.stdin is not None
        self._emit = emit
        for done in self._streams_done.values():
            done.clear()
        self.proc.stdin.write(_encode(request) + b"\n")
        await self.proc.stdin.drain()
        line = await self._answers.readline()
        if not line:
            code = await self.proc.wait()
            raise ChildDied(f"the step's process ended (exit code {code}) before answering")
        await asyncio.gather(*(done.wait() for done in self._streams_done.values()))
        self._emit = None
        answer: dict[str, Any] = _decode(line)
        return answer

    async def _lines(self, stream: asyncio.StreamReader | None, name: str) -> None:
        if stream is None:
            return
        held_blank = False  # the blank line the child writes before its end marker
        while line := await stream.readline():
            text = line.decode("utf-8", errors="replace").rstrip("\n")
            if text == END_OF_STEP:
                held_blank = False
                self._streams_done[name].set()
                continue
            if held_blank:
                self._say(name, "")
            held_blank = text == ""
            if not held_blank:
                self._say(name, text)

    def _say(self, stream: str, text: str) -> None:
        if self._emit is not None:
            self._emit(stream, text)

    async def kill(self) -> None:
        """Kill the child and everything it started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def close(self) -> None:
        if self.proc.stdin is not None and self.alive:
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 2)
        await self.kill()


class ChildDied(Exception):
    """The child process ended while it ran a step."""


class ChildPool:
    """Idle children kept for the next step; a step that is stopped takes its child along."""

    def __init__(self) -> None:
        self._idle: list[Child] = []
        self._busy: set[Child] = set()

    async def run(self, request: dict[str, Any], emit: LogEmitter) -> dict[str, Any]:
        child = self._idle.pop() if self._idle else await Child.start()
        self._busy.add(child)
        try:
            answer = await child.call(request, emit)
        except BaseException:
            # Cancelled (its time is up, its run was cancelled) or broken: never reuse it.
            self._busy.discard(child)
            await asyncio.shield(child.kill())
            raise
        self._busy.discard(child)
        self._idle.append(child)
        return answer

    async def close(self) -> None:
        children = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        await asyncio.gather(*(child.close() for child in children), return_exceptions=True)
