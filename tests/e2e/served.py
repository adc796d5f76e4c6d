"""``conveyor server`` on a home in a test's folder, as its users start it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.services import free_port, start_logging_to, wait_for_port

LONG = """
name: long
tasks:
  - name: wait
    script: |
      echo $$ > {pidfile}
      while ! test -f {flag}; do sleep 0.05; done
      echo fixed
  - name: after
    depends: [wait]
    script: echo after
"""


class Server:
    """``conveyor server`` on a home in ``tmp_path``, serving the LONG workflow."""

    def __init__(
        self, tmp_path: Path, *, grace: float, wake: float | None = None, debug: bool = False
    ) -> None:
        """``grace``: for its running steps when it stops; ``wake``: how often it looks for
        runs of its home that no process drives (``CONVEYOR_WAKE_INTERVAL``); ``debug``:
        its log says more."""
        self.tmp_path = tmp_path
        self.pidfile = tmp_path / "step.pid"
        self.flag = tmp_path / "fixed"
        flows = tmp_path / "flows"
        flows.mkdir(exist_ok=True)
        (flows / "long.yaml").write_text(LONG.format(pidfile=self.pidfile, flag=self.flag))
        self.log = tmp_path / "server.log"
        self.env = {
            **os.environ,
            "CONVEYOR_HOME": str(tmp_path / ".conveyor"),
            "CONVEYOR_WORKER_GRACE": str(grace),
            **({} if wake is None else {"CONVEYOR_WAKE_INTERVAL": str(wake)}),
            **({"CONVEYOR_LOG_LEVEL": "debug"} if debug else {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "conveyor", "server", "--workflows", "flows"]
        self.proc = start_logging_to(
            self.log, [*argv, "--port", str(port)], cwd=self.tmp_path, env=self.env
        )
        wait_for_port(port, 30, self.proc)
        self.url = f"http://127.0.0.1:{port}"

    def signal(self, received: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(received)

    def exit_code(self, within: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=within)

    def says(self, text: str, within: float = 10, times: int = 1) -> None:
        """Wait until its log says ``text`` (at least ``times`` times)."""
        deadline = time.monotonic() + within
        while self.log.read_text().count(text) < times:
            assert time.monotonic() < deadline, f"never said {text!r}: {self.log.read_text()}"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def run(self, run_id: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/api/v1/runs/{run_id}", timeout=10)
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    def start_run(self) -> tuple[str, int]:
        """Start a run of LONG; its id and the pid of its running step."""
        self.pidfile.unlink(missing_ok=True)
        answer = httpx.post(f"{self.url}/api/v1/runs", json={"workflow": "long"}, timeout=10)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 30
        while not (self.pidfile.exists() and self.pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "the step did not start"
            time.sleep(0.05)
        return answer.json()["run_id"], int(self.pidfile.read_text())

    def settled(self, run_id: str, within: float = 30) -> dict[str, Any]:
        """The run once it is no longer running."""
        deadline = time.monotonic() + within
        while (run := self.run(run_id))["state"] == "running":
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
        return run
