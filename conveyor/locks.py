"""Who drives what in a local home: file locks that name the process holding them.

Without servers, a run advances only while a process runs an engine on the home, and
two engines driving one run would both run its steps. So a process that drives runs
holds a lock (a file under ``HOME/locks``, locked with ``flock``: released however the
process ends) and other commands ask who holds it:

- ``RunLock``: one run, held by the ``conveyor run``, ``resume`` or ``retry`` process
  that drives it;
- ``ServerLock``: the whole home, held by an embedded ``conveyor server``, which drives
  every run it starts and every run left unfinished when it started. One server per
  home.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from contracts.errors import Conflict, Problem


class ProcessLock:
    """A lock file that holds the pid of the live process holding it."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self._what = what
        self._handle: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            return False
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        self._handle = handle
        return True

    def holder(self) -> int | None:
        """The pid of the live process holding the lock, if any."""
        if not self.path.exists():
            return None
        if self.acquire():
            self.release()
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(self.path.read_text().strip())
        return None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def refuse_if_held(self, hint: str = "") -> None:
        """Raise ``Conflict`` naming the process that holds the lock, if one does."""
        pid = self.holder()
        if pid is not None:
            raise Conflict([Problem(f"{self._what} by process {pid}{hint}")])

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if not self.acquire():
            self.refuse_if_held()
            # Its holder let go between the two looks: take it now, or say it is taken.
            if not self.acquire():
                raise Conflict([Problem(f"{self._what} by another process")])
        try:
            yield
        finally:
            self.release()


class RunLock(ProcessLock):
    """The lock of one run in a local home; held while a process drives the run."""

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(home / "locks" / f"{run_id}.lock", f"run {run_id} is being run")
        self.cancel_note = self.path.with_suffix(".cancel")
        """Left by ``conveyor cancel`` before it interrupts the holder: the interrupt
        is a cancel asked for from elsewhere, not a Ctrl-C at the holder's terminal."""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with super().held():
            self.cancel_note.unlink(missing_ok=True)  # of a process before this one
            try:
                yield
            finally:
                self.cancel_note.unlink(missing_ok=True)


def forget_run(home: Path, run_id: str) -> None:
    """Remove the lock file and cancel note of a deleted run (nobody drives an ended
    run, and a home keeps no file per run it no longer holds)."""
    lock = RunLock(home, run_id)
    if lock.holder() is None:
        lock.path.unlink(missing_ok=True)
        lock.cancel_note.unlink(missing_ok=True)


class ServerLock(ProcessLock):
    """Held by the embedded server of a home while it serves."""

    def __init__(self, home: Path) -> None:
        super().__init__(home / "locks" / "server.lock", f"{home} is served already")


def run_driver(home: Path, run_id: str) -> int | None:
    """The pid of the process of ``home`` that drives the run (its own ``conveyor run``,
    ``resume`` or ``retry``, or the home's server), if one does."""
    return RunLock(home, run_id).holder() or ServerLock(home).holder()
