"""Stopping ``conveyor server`` as systemd, Kubernetes or Ctrl-C do: its steps and its
open streams end with it, and its unfinished runs go on when it starts again."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.commands import conveyor
from tests.e2e.test_local_control import gone
from tests.services import free_port, start_logging_to

pytestmark = pytest.mark.timeout(120)


class Stream(threading.Thread):
    """Reads a Server-Sent Events stream to its end, noting how it ended."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.opened = threading.Event()
        self.received = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=60) as answer:
                for chunk in answer.iter_bytes():
                    self.received += chunk
                    self.opened.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.opened.set()


def test_sigterm_ends_the_servers_steps_and_streams_and_the_run_goes_on_at_the_next_start(
    server: Any,
) -> None:
    first = server(grace=1)
    first.start()
    run_id, step = first.start_run()
    events = Stream(f"{first.url}/api/v1/runs/{run_id}/events/stream")
    events.start()
    assert events.opened.wait(10)

    first.signal(signal.SIGTERM)
    assert first.exit_code() == 0
    assert gone(step), "the step outlived its server"
    events.join(10)
    assert not events.is_alive()
    assert events.error is None, events.error  # ended whole, not cut off mid-chunk
    assert b"event: task_started" in events.received
    said = first.log.read_text()
    assert "stopping (SIGTERM): running steps get up to 1s to finish" in said
    assert "Traceback" not in said

    first.flag.touch()  # the step's next attempt finishes
    second = server(grace=1)
    second.start()
    deadline = time.monotonic() + 60
    while (run := second.run(run_id))["state"] != "succeeded":
        assert run["state"] == "running", run
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    assert [(t["name"], t["attempt"]) for t in run["tasks"]] == [("wait", 2), ("after", 1)]
    second.signal(signal.SIGINT)
    assert second.exit_code() == 0


def test_a_step_that_finishes_within_the_grace_period_counts(server: Any, tmp_path: Path) -> None:
    patient = server(grace=60)
    patient.start()
    run_id, step = patient.start_run()
    patient.signal(signal.SIGHUP)
    patient.says("stopping (SIGHUP): running steps get up to 60s to finish")
    assert patient.proc.poll() is None and not gone(step, within=0)
    patient.flag.touch()  # the step ends, inside the grace period
    assert patient.exit_code() == 0
    shown = json.loads(conveyor("show", run_id, "--json", cwd=tmp_path).stdout)
    tasks = {t["name"]: t for t in shown["tasks"]}
    assert (tasks["wait"]["state"], tasks["wait"]["attempts"]) == ("succeeded", 1)


def test_a_second_signal_ends_the_running_steps_at_once(server: Any) -> None:
    hurried = server(grace=60)
    hurried.start()
    _run_id, step = hurried.start_run()
    hurried.signal(signal.SIGTERM)
    hurried.says("stopping (SIGTERM)")
    hurried.signal(signal.SIGTERM)
    assert hurried.exit_code(within=20) == 0  # well before the 60 s of grace
    assert gone(step)
    assert "stopping now" in hurried.log.read_text()


def test_a_server_still_connecting_to_its_broker_stops_at_once(tmp_path: Path) -> None:
    """Kubernetes stops a pod whose broker is not up yet: nothing has started to finish."""
    log = tmp_path / "server.log"
    absent = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "CONVEYOR_AMQP_URL": f"amqp://guest:guest@{absent}/",
        "CONVEYOR_REDIS_URL": f"redis://{absent}/0",
    }
    argv = [sys.executable, "-m", "conveyor", "server", "--port", str(free_port())]
    proc = start_logging_to(log, argv, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        while "not reachable; retrying" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
