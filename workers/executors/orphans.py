"""Steps whose worker is gone: found on this host and ended.

A worker that dies at once (SIGKILL, the OOM killer) cannot kill its steps: each runs in
a session of its own, so that a cancel can end its whole tree, and so no signal to the
worker reaches it. Left running, such a step would run beside the attempt that takes its
place when the run is resumed. So every step process carries its worker's name in
``CONVEYOR_WORKER`` (its children inherit it), and a worker starting on the host ends
the processes of workers that no longer run there, as it removes their containers.
"""

from __future__ import annotations

import contextlib

import psutil

WORKER_VARIABLE = "CONVEYOR_WORKER"


def worker_alive(worker: str) -> bool:
    """A worker name is host:pid[:n] (or embedded:pid:pool); alive if that pid still
    runs on this host. A name it cannot read counts as alive: nothing of it is ended."""
    parts = worker.split(":")
    try:
        return psutil.pid_exists(int(parts[1]))
    except (IndexError, ValueError):
        return True


def end_orphaned_steps(me: str) -> int:
    """Kill the step processes on this host whose worker is gone; how many there were.

    Blocking (it reads every process's environment it may read): run it in a thread.
    """
    killed = 0
    for process in psutil.process_iter():
        try:
            owner = process.environ().get(WORKER_VARIABLE)
        except psutil.Error:  # gone meanwhile, or another user's
            continue
        if owner and owner != me and not worker_alive(owner):
            with contextlib.suppress(psutil.Error):
                process.kill()
                killed += 1
    return killed
