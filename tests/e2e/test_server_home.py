"""One driver per run in a local home: the command line and an embedded server on the
same home steer each other's runs through the process that drives them, never by
driving them a second time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.commands import conveyor
from tests.e2e.test_local_control import LONG as LOCAL_LONG
from tests.e2e.test_local_control import gone, killed, start
from tests.services import free_port

pytestmark = pytest.mark.timeout(120)

FLAKY = """
name: flaky
tasks:
  - name: check
    script: test -f {flag}
  - name: after
    depends: [check]
    script: echo after
"""


def events_of(tmp_path: Path, run_id: str) -> list[dict[str, Any]]:
    listed = conveyor("events", run_id, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def test_conveyor_cancel_has_the_server_cancel_the_run_it_drives(
    server: Any, tmp_path: Path
) -> None:
    served = server(grace=1)
    served.start()
    run_id, step = served.start_run()
    cancelled = conveyor("cancel", run_id[:8], cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"by the server of this home, process {served.proc.pid}" in cancelled.stdout
    assert gone(step), "the server's step outlived the cancel"
    run = served.run(run_id)
    assert (run["state"], run["reason"]) == ("cancelled", "cancelled (conveyor cancel)")
    served.flag.touch()  # were the step still going, it would end now and `after` run
    kinds = [e["type"] for e in events_of(tmp_path, run_id) if e.get("task") == "after"]
    assert "task_dispatched" not in kinds
    assert served.proc.poll() is None  # the server goes on


def test_a_run_the_server_drives_is_not_resumed_beside_it(server: Any, tmp_path: Path) -> None:
    served = server(grace=1)
    served.start()
    run_id, step = served.start_run()
    resumed = conveyor("resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 2
    assert f"run {run_id} is running already, in the server" in resumed.stderr
    answer = httpx.post(f"{served.url}/api/v1/runs/{run_id}/resume", timeout=10)
    assert answer.status_code == 409, answer.text
    assert not gone(step, within=0)  # still its first and only attempt
    served.flag.touch()
    run = served.settled(run_id)
    assert [(t["name"], t["attempt"]) for t in run["tasks"]] == [("wait", 1), ("after", 1)]


def test_conveyor_retry_has_the_server_run_the_retry(server: Any, tmp_path: Path) -> None:
    flag = tmp_path / "checked"
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "flaky.yaml").write_text(FLAKY.format(flag=flag))
    served = server(grace=1)
    served.start()
    answer = httpx.post(f"{served.url}/api/v1/runs", json={"workflow": "flaky"}, timeout=10)
    run_id = answer.json()["run_id"]
    assert served.settled(run_id)["state"] == "failed"
    flag.touch()
    retried = conveyor("retry", run_id, cwd=tmp_path)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    said = retried.stderr
    assert f"retry: the server of this home (process {served.proc.pid}) runs it" in said
    assert "check: failed" not in said  # the first round is not shown again
    assert "run succeeded" in retried.stdout
    assert served.run(run_id)["state"] == "succeeded"


def test_one_embedded_server_per_home(server: Any, tmp_path: Path) -> None:
    first = server(grace=1)
    first.start()
    second = subprocess.run(
        [sys.executable, "-m", "conveyor", "server", "--port", str(free_port())],
        cwd=tmp_path,
        env=first.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert f"is served already by process {first.proc.pid}" in second.stderr


def test_the_server_steers_a_conveyor_run_through_its_process(server: Any, tmp_path: Path) -> None:
    served = server(grace=1)
    served.start()
    driving, pidfile = start(tmp_path, LOCAL_LONG)
    run_id = json.loads(conveyor("runs", "--json", cwd=tmp_path).stdout)[0]["run_id"]
    for action in ("resume", "signals/go"):
        refused = httpx.post(f"{served.url}/api/v1/runs/{run_id}/{action}", timeout=10)
        assert refused.status_code == 409, refused.text
        assert f"is being run by process {driving.pid}" in refused.json()["detail"]
    answer = httpx.post(f"{served.url}/api/v1/runs/{run_id}/cancel", timeout=10)
    assert answer.status_code == 202, answer.text
    _out, said = driving.communicate(timeout=30)
    assert driving.returncode == 1, said  # cancelled, by the process that drove it
    assert "asked to cancel (the API)" in said
    assert gone(int(pidfile.read_text()))
    run = served.run(run_id)
    assert (run["state"], run["reason"]) == ("cancelled", "cancelled (the API)")


def test_a_run_whose_conveyor_run_was_killed_shows_stalled_and_resumes_when_asked(
    server: Any, tmp_path: Path
) -> None:
    served = server(grace=1, wake=600)  # it would take the run up by itself too: later
    served.start()
    own_run, _own_step = served.start_run()  # one the server drives itself
    served.pidfile.unlink()  # the local run's step writes its pid to the same file
    driving, pidfile = start(tmp_path, LOCAL_LONG)
    run_id = next(
        r["run_id"]
        for r in json.loads(conveyor("runs", "--json", cwd=tmp_path).stdout)
        if r["workflow"] == "long" and r["run_id"] != own_run
    )
    for driven in (own_run, run_id):  # the server's and the process's: neither is stalled
        assert served.run(driven)["stalled"] is False
        page = httpx.get(f"{served.url}/runs/{driven}/live", timeout=10).text
        assert "stalled" not in page and "/resume" not in page
    killed(driving)  # SIGKILL: the run is left running in the log, with nobody driving it
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 15  # quiet for STALL_GRACE first
    while not served.run(run_id)["stalled"]:
        assert time.monotonic() < deadline, "never shown stalled"
        time.sleep(0.1)
    listed = httpx.get(f"{served.url}/api/v1/runs", timeout=10).json()["items"]
    assert {r["run_id"]: r["stalled"] for r in listed} == {run_id: True, own_run: False}
    page = httpx.get(f"{served.url}/runs/{run_id}/live", timeout=10).text
    assert 'class="pill stalled"' in page and f"/api/v1/runs/{run_id}/resume" in page
    (tmp_path / "fixed").touch()  # the local step's flag: its next attempt succeeds
    # Resume (the page's button) has the server take it up; then the server drives it.
    answer = httpx.post(f"{served.url}/api/v1/runs/{run_id}/resume", timeout=10)
    assert answer.status_code == 202, answer.text
    assert served.run(run_id)["stalled"] is False
    run = served.settled(run_id)
    assert run["state"] == "succeeded", run
    assert [(t["name"], t["attempt"]) for t in run["tasks"]] == [("first", 1), ("wait", 2)]


def test_the_server_takes_up_by_itself_a_run_whose_conveyor_run_was_killed(
    server: Any, tmp_path: Path
) -> None:
    served = server(grace=1, wake=0.2, debug=True)
    served.start()
    driving, pidfile = start(tmp_path, LOCAL_LONG)
    [run_id] = [r["run_id"] for r in json.loads(conveyor("runs", "--json", cwd=tmp_path).stdout)]
    first_step = int(pidfile.read_text())
    looked = served.log.read_text().count("looked for runs no process drives")
    # Three more checks while the process drives its run: each leaves it alone.
    served.says("looked for runs no process drives", times=looked + 3)
    assert "taking up" not in served.log.read_text()
    assert int(pidfile.read_text()) == first_step
    (tmp_path / "fixed").touch()  # the step's next attempt succeeds
    killed(driving)  # SIGKILL: no cancel is written, nobody drives the run
    os.kill(first_step, signal.SIGKILL)
    pidfile.unlink()
    served.says("taking up a run no process drives")
    deadline = time.monotonic() + 30  # the step runs again, in the server
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the step did not run again"
        time.sleep(0.05)
    run = served.settled(run_id)
    assert run["state"] == "succeeded", run
    assert [(t["name"], t["attempt"]) for t in run["tasks"]] == [("first", 1), ("wait", 2)]
    assert served.log.read_text().count("taking up a run") == 1


def test_a_server_given_a_retention_period_deletes_the_runs_past_it(
    server: Any, tmp_path: Path
) -> None:
    (tmp_path / "hello.yaml").write_text("name: hello\ntasks: [{name: a, script: echo hi}]\n")
    before = json.loads(conveyor("run", "hello.yaml", "--json", cwd=tmp_path).stdout)["run_id"]
    served = server(grace=1)
    served.env["CONVEYOR_RETENTION"] = "1s"
    served.start()
    served.says("runs are deleted 1s after they end (CONVEYOR_RETENTION)")
    run_id, _step = served.start_run()
    served.flag.touch()
    assert served.settled(run_id)["state"] == "succeeded"
    deadline = time.monotonic() + 30  # a second's period, then a pruning each second
    while httpx.get(f"{served.url}/api/v1/runs/{run_id}", timeout=10).status_code != 404:
        assert time.monotonic() < deadline, "the ended run was never pruned"
        time.sleep(0.1)
    assert httpx.get(f"{served.url}/api/v1/runs/{before}", timeout=10).status_code == 404
    assert not (tmp_path / ".conveyor" / "locks" / f"{before}.lock").exists()


def test_a_bad_retention_period_stops_the_server_before_it_serves(tmp_path: Path) -> None:
    refused = conveyor("server", extra_env={"CONVEYOR_RETENTION": "a month"}, cwd=tmp_path)
    assert refused.returncode == 2, refused
    assert "CONVEYOR_RETENTION" in refused.stderr and "a month" in refused.stderr
