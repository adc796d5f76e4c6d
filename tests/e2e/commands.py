"""``conveyor`` commands for the end-to-end tests, with what they print and their exit code.

``conveyor()`` runs the command inside the test process, through the same ``main()``
that ``python -m conveyor`` calls: each Python start-up costs more than a second on a
small machine, and the tests make hundreds of such calls. What a command could leave
behind in this process is put back after it: the working directory, ``sys.argv`` and
``sys.path``, the modules imported from the test's own folder, the signal handlers, the
umask and the log set-up. Tests of what only a process shows (being killed, signals,
``--help`` as a process, the README) start one, with ``conveyor_process()`` or their own
``subprocess`` calls.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import structlog
from click.testing import CliRunner

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _env(cwd: Path, extra_env: dict[str, str] | None) -> dict[str, str]:
    return {
        "CONVEYOR_HOME": str(cwd / ".conveyor"),
        "CONVEYOR_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }


def conveyor(
    *args: str,
    cwd: Path,
    timeout: float = 120,
    extra_env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``conveyor ARGS`` run in ``cwd``, in this process (see above). ``timeout`` bounds
    a process only; in this process, the test's own timeout (pytest-timeout) bounds it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # the command runs its own event loop; an async test already has one here
        return conveyor_process(*args, cwd=cwd, timeout=timeout, extra_env=extra_env, stdin=stdin)
    from conveyor.cli.app import main

    handlers = {each: signal.getsignal(each) for each in HANDLED}
    logging = structlog.get_config()
    argv, path, modules, here = sys.argv, list(sys.path), set(sys.modules), os.getcwd()
    umask = os.umask(0o022)
    os.umask(umask)
    code: int = 0
    os.chdir(cwd)
    try:
        with CliRunner().isolation(input=stdin, env=_env(cwd, extra_env)) as (out, err, _):
            sys.argv = ["conveyor", *args]
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            sys.stdout.flush()
            sys.stderr.flush()
            printed, said = out.getvalue().decode(), err.getvalue().decode()
    finally:
        os.chdir(here)
        sys.argv, sys.path[:] = argv, path
        for name in set(sys.modules) - modules:
            # A workflow's own modules (a step's, a Python workflow file): the next test
            # may have its own of the same name.
            if Path(getattr(sys.modules[name], "__file__", None) or "/").is_relative_to(cwd):
                del sys.modules[name]
        for each, handler in handlers.items():
            signal.signal(each, handler)
        os.umask(umask)
        structlog.configure(**logging)
    return subprocess.CompletedProcess(["conveyor", *args], code, printed, said)


def conveyor_process(
    *args: str,
    cwd: Path,
    timeout: float = 120,
    extra_env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m conveyor ARGS`` as a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env={**os.environ, **_env(cwd, extra_env)},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
