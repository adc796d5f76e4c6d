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
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


class Spawned:
    """A running child: its output as streams, its exit as an awaitable (the part of
    ``asyncio.subprocess.Process`` the executors use)."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdout: asyncio.StreamReader | None,
        stderr: asyncio.StreamReader | None,
        exited: asyncio.Future[int],
    ) -> None:
        self._popen = popen
        self.stdout = stdout
        self.stderr = stderr
        self._exited = exited

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


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Spawned:
    """Start ``argv`` with stdin from /dev/null and stdout and stderr piped (in this
    process's directory and environment unless ``cwd`` and ``env`` are given), in a
    session of its own: its process group is the step's tree, killed as one.

    Raises what ``subprocess.Popen`` raises when the program or ``cwd`` cannot be used.
    """
    loop = asyncio.get_running_loop()
    popen = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout = await _reader(loop, popen.stdout)
        stderr = await _reader(loop, popen.stderr)
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    return Spawned(popen, stdout, stderr, _exit_of(loop, popen))


async def _reader(
    loop: asyncio.AbstractEventLoop, pipe: IO[bytes] | None
) -> asyncio.StreamReader | None:
    if pipe is None:
        return None
    reader = asyncio.StreamReader(loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
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
