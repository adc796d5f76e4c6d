"""Starting a step's process without stalling the event loop.

uvloop starts a child with ``fork``, which copies the parent's page tables: in a worker
or server of 100 MB that blocks the loop about 15 ms per step, so script steps could
never start faster than about 60 a second, whatever the cores. ``subprocess.Popen``
starts it with ``vfork`` (0.4 ms); its pipes are then read on the loop and its exit is
awaited through a pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from contracts.errors import StepError
from contracts.vocabulary import FailureKind

READ_AFTER_KILL = 1.0
"""Seconds an ended child's last output may take to be read before its pipes close."""

MAX_ARG_STRLEN = 32 * os.sysconf("SC_PAGE_SIZE")
"""Linux's ceiling on one argument or one ``NAME=value`` variable handed to a program
(32 pages), beside the ceiling on all of them together (``SC_ARG_MAX``)."""


class Spawned:
    """A running child: its output as streams, its exit as an awaitable (the part of
    ``asyncio.subprocess.Process`` the executors use)."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdout: asyncio.StreamReader | None,
        stderr: asyncio.StreamReader | None,
        exited: asyncio.Future[int],
        pipes: Sequence[asyncio.BaseTransport] = (),
    ) -> None:
        self._popen = popen
        self.stdout = stdout
        self.stderr = stderr
        self._exited = exited
        self._pipes = pipes

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or minus the signal that ended it; None while it runs."""
        return self._popen.returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """SIGKILL, unless it has already ended and been reaped."""
        self._popen.kill()

    async def end_reading(
        self, readers: asyncio.Future[Any], within: float = READ_AFTER_KILL
    ) -> None:
        """Once the child has ended or been killed: give ``readers`` (what reads its
        stdout and stderr to the end) ``within`` seconds for what it wrote before, then
        close the pipes, which ends them. A process that left the child's tree may hold
        the pipes open for good; left open, each such step would never end, or keep two
        descriptors until the garbage collector found them."""
        try:
            await asyncio.wait([readers], timeout=within)
        finally:
            for pipe in self._pipes:
                pipe.close()
        await asyncio.gather(readers, return_exceptions=True)


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Spawned:
    """Start ``argv`` with stdin from /dev/null and stdout and stderr piped (in this
    process's directory and environment unless ``cwd`` and ``env`` are given), in a
    session of its own: its process group is the step's tree, killed as one.

    Raises what ``subprocess.Popen`` raises when the program or ``cwd`` cannot be used,
    and a ``StepError`` naming what is too large when the system refuses the arguments
    and variables (the same values would be refused again: not retryable).
    """
    loop = asyncio.get_running_loop()
    try:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        if exc.errno != errno.E2BIG:
            raise
        raise StepError(
            too_large(argv, os.environ if env is None else env),
            kind=FailureKind.START,
            retryable=False,
        ) from None
    pipes: list[asyncio.BaseTransport] = []
    unclaimed = [pipe for pipe in (popen.stdout, popen.stderr) if pipe is not None]
    try:
        stdout = await _reader(loop, popen.stdout, pipes, unclaimed)
        stderr = await _reader(loop, popen.stderr, pipes, unclaimed)
    except BaseException:  # a cancel can come while the pipes are being connected
        popen.kill()
        popen.wait()
        for transport in pipes:
            transport.close()
        for pipe in unclaimed:
            pipe.close()
        raise
    return Spawned(popen, stdout, stderr, _exit_of(loop, popen), pipes)


def too_large(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """What to say when the system refuses ``argv`` and ``env`` as too large (E2BIG):
    which values are over the ceiling on one, or else what all of them come to."""
    sizes = {f"variable {name}": _held(f"{name}={value}") for name, value in env.items()}
    sizes |= {f"argument {position}": _held(arg) for position, arg in enumerate(argv)}
    over = [f"{what} is {size:,} bytes" for what, size in sizes.items() if size > MAX_ARG_STRLEN]
    if over:
        said = f"{', '.join(over)}, over the {MAX_ARG_STRLEN:,} the system takes for one"
    else:
        limit = os.sysconf("SC_ARG_MAX")
        said = (
            f"its variables and arguments come to {sum(sizes.values()):,} bytes (the system"
            f" takes about {limit:,} in all)"
        )
    return f"cannot start {argv[0]!r}: {said}; pass large values as files (input artifacts)"


def _held(text: str) -> int:
    """Bytes the system counts for one argument or variable (its ending NUL included)."""
    return len(text.encode(errors="surrogateescape")) + 1


async def _reader(
    loop: asyncio.AbstractEventLoop,
    pipe: IO[bytes] | None,
    pipes: list[asyncio.BaseTransport],
    unclaimed: list[IO[bytes]],
) -> asyncio.StreamReader | None:
    """The pipe read on the loop; its transport joins ``pipes``. From the moment it is
    handed to the loop the pipe is the loop's to close (also when connecting it fails),
    so it leaves ``unclaimed`` then: under uvloop its file object stays open after the
    loop closed the descriptor, and closing that again could close a reused one."""
    if pipe is None:
        return None
    reader = asyncio.StreamReader(loop=loop)
    unclaimed.remove(pipe)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
    )
    pipes.append(transport)
    return reader


def _exit_of(
    loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes]
) -> asyncio.Future[int]:
    """A future of the child's exit code, set on the loop when it ends."""
    exited: asyncio.Future[int] = loop.create_future()
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # no pidfd (an old kernel): a thread waits instead
        waiting = loop.run_in_executor(None, popen.wait)
        waiting.add_done_callback(lambda done: _settle(exited, done.result()))
        return exited

    def ended() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        # The pidfd is readable once the child has ended: this reaps it without waiting.
        code = popen.poll()
        _settle(exited, code if code is not None else popen.wait())

    loop.add_reader(pidfd, ended)
    return exited


def _settle(exited: asyncio.Future[int], code: int) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):
        exited.set_result(code)
