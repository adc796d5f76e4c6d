"""Steering local runs as a user does: Ctrl-C, kill -9 then resume, cancel, retry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.commands import conveyor

pytestmark = pytest.mark.timeout(120)

LONG = """
name: long
tasks:
  - name: first
    script: echo first
  - name: wait
    depends: [first]
    script: |
      echo $$ > {pidfile}
      test -f {flag} && echo fixed && exit 0
      exec sleep 60
"""


def start(tmp_path: Path, text: str) -> tuple[subprocess.Popen[str], Path]:
    wf = tmp_path / "wf.yaml"
    pidfile = tmp_path / "step.pid"
    wf.write_text(text.format(pidfile=pidfile, flag=tmp_path / "fixed"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", str(wf)],
        cwd=tmp_path,
        env={**os.environ, "CONVEYOR_HOME": str(tmp_path / ".conveyor")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step did not start"
        time.sleep(0.05)
    return proc, pidfile


def killed(proc: subprocess.Popen[str]) -> None:
    """SIGKILL; its output is not read (its step, still running, holds the pipes open)."""
    proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def only_run(tmp_path: Path) -> dict[str, object]:
    listed = json.loads(conveyor("runs", "--json", cwd=tmp_path).stdout)
    assert len(listed) == 1
    return listed[0]  # type: ignore[no-any-return]


def gone(pid: int, within: float = 5) -> bool:
    deadline = time.monotonic() + within
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_ctrl_c_cancels_the_run_kills_its_steps_and_exits_130(tmp_path: Path) -> None:
    proc, pidfile = start(tmp_path, LONG)
    asked = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - asked
    assert proc.returncode == 130, out + err
    assert took < 5, f"exited {took:.1f}s after Ctrl-C"
    assert "interrupted: cancelling the run" in err
    assert gone(int(pidfile.read_text()))
    run = only_run(tmp_path)
    assert run["state"] == "cancelled" and run["reason"] == "interrupted (Ctrl-C)"
    # The run is over, so following its log ends at once.
    follow = conveyor("logs", str(run["run_id"]), "-f", cwd=tmp_path, timeout=20)
    assert follow.returncode == 0 and "first#1 stdout| first" in follow.stdout


@pytest.mark.parametrize(
    ("stop", "word", "reason"),
    [
        (signal.SIGTERM, "terminated", "terminated (SIGTERM)"),
        (signal.SIGHUP, "hung up", "hung up (SIGHUP)"),
    ],
)
def test_sigterm_or_sighup_cancels_the_run_and_kills_its_steps(
    tmp_path: Path, stop: signal.Signals, word: str, reason: str
) -> None:
    """As a timeout, a CI job's cancel or systemd stops it (SIGTERM), or a closed
    terminal (SIGHUP): nothing is left running."""
    proc, pidfile = start(tmp_path, LONG)
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + stop, out + err
    assert f"{word}: cancelling the run" in err
    assert gone(int(pidfile.read_text()))
    run = only_run(tmp_path)
    assert run["state"] == "cancelled" and run["reason"] == reason


def test_a_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    proc, _pidfile = start(tmp_path, LONG)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert proc.returncode == 130


def recorded_started(tmp_path: Path, run_id: str, task: str) -> None:
    """Waits until the run's log records ``task`` started (a step runs a moment before
    its start is recorded: killed in between, it is sent again as it was)."""
    deadline = time.monotonic() + 30
    while True:
        lines = conveyor("events", run_id, cwd=tmp_path).stdout.splitlines()
        if any(e["type"] == "task_started" and e["task"] == task for e in map(json.loads, lines)):
            return
        assert time.monotonic() < deadline, f"{task} was not recorded started"
        time.sleep(0.05)


def test_a_killed_run_is_resumed_and_finishes_what_was_not_done(tmp_path: Path) -> None:
    proc, pidfile = start(tmp_path, LONG)
    recorded_started(tmp_path, str(only_run(tmp_path)["run_id"]), "wait")
    assert "stalled" not in conveyor("runs", cwd=tmp_path).stdout  # its process drives it
    assert only_run(tmp_path)["stalled"] is False
    step_pid = int(pidfile.read_text())
    killed(proc)  # SIGKILL: no chance to record anything
    os.kill(step_pid, signal.SIGKILL)  # its step went down with the machine, say
    run = only_run(tmp_path)
    assert run["state"] == "running" and run["stalled"] is True
    # Its log says running; the listing and the run's page say that nothing runs it.
    short = str(run["run_id"])[:12]
    listed = conveyor("runs", cwd=tmp_path).stdout
    assert "running (stalled)" in listed and "`conveyor resume RUN` finishes it" in listed
    shown = conveyor("show", short, cwd=tmp_path).stdout
    assert (
        f"stalled: the process that ran it ended first (killed?); `conveyor resume {short}`"
        in shown
    )
    assert json.loads(conveyor("show", short, "--json", cwd=tmp_path).stdout)["stalled"] is True
    (tmp_path / "fixed").touch()
    resumed = conveyor("resume", str(run["run_id"])[:8], cwd=tmp_path, timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    events = [
        json.loads(line)
        for line in conveyor("events", str(run["run_id"]), cwd=tmp_path).stdout.splitlines()
    ]
    done = [(e["task"], e["attempt"]) for e in events if e["type"] == "task_succeeded"]
    assert done == [("first", 1), ("wait", 2)]  # first kept; the lost attempt ran again
    assert "stalled" not in conveyor("show", short, cwd=tmp_path).stdout
    assert json.loads(conveyor("show", short, "--json", cwd=tmp_path).stdout)["stalled"] is False
    lost = [e for e in events if e["type"] == "task_failed"]
    assert [e["reason"] for e in lost] == ["lost"]
    again = conveyor("resume", str(run["run_id"]), cwd=tmp_path)
    assert again.returncode == 2 and "already succeeded" in again.stderr


def test_following_the_logs_of_a_run_whose_process_is_killed_ends_and_says_so(
    tmp_path: Path,
) -> None:
    proc, pidfile = start(tmp_path, LONG)
    run_id = str(only_run(tmp_path)["run_id"])
    recorded_started(tmp_path, run_id, "wait")
    follower = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "logs", run_id, "-f"],
        cwd=tmp_path,
        env={**os.environ, "CONVEYOR_HOME": str(tmp_path / ".conveyor")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first#1 stdout| first\n"  # it follows
        killed(proc)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        _, errors = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 1, errors
    assert f"run {run_id} is not running: the process that ran it ended first" in errors
    assert f"`conveyor resume {run_id[:12]}` finishes it" in errors


def test_a_step_left_running_by_a_killed_run_is_ended_before_it_resumes(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, say) leaves the step running in its own session: resumed,
    the run would run it a second time beside it. The resuming process ends it first."""
    proc, pidfile = start(tmp_path, LONG)
    recorded_started(tmp_path, str(only_run(tmp_path)["run_id"]), "wait")
    step_pid = int(pidfile.read_text())
    killed(proc)
    assert not gone(step_pid, within=0)  # still running: nothing else ends it
    (tmp_path / "fixed").touch()
    resumed = conveyor("resume", str(only_run(tmp_path)["run_id"]), cwd=tmp_path, timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert gone(step_pid)


def test_cancel_interrupts_the_process_running_a_local_run(tmp_path: Path) -> None:
    proc, pidfile = start(tmp_path, LONG)
    run = only_run(tmp_path)
    cancelled = conveyor("cancel", str(run["run_id"]), cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"interrupted process {proc.pid}" in cancelled.stdout
    _out, said = proc.communicate(timeout=30)
    assert proc.returncode == 1  # a cancelled run, not a Ctrl-C at its terminal (130)
    assert "asked to cancel (conveyor cancel): cancelling the run" in said
    assert gone(int(pidfile.read_text()))
    run = only_run(tmp_path)
    assert run["state"] == "cancelled" and run["reason"] == "cancelled (conveyor cancel)"


def test_cancel_records_a_run_nobody_runs_and_retry_reruns_it(tmp_path: Path) -> None:
    proc, pidfile = start(tmp_path, LONG)
    step_pid = int(pidfile.read_text())
    killed(proc)
    os.kill(step_pid, signal.SIGKILL)
    run_id = str(only_run(tmp_path)["run_id"])
    cancelled = conveyor("cancel", run_id, cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "no process was running it" in cancelled.stdout
    assert only_run(tmp_path)["state"] == "cancelled"
    refused = conveyor("cancel", run_id, cwd=tmp_path)
    assert refused.returncode == 2 and "already cancelled" in refused.stderr

    (tmp_path / "fixed").touch()
    retried = conveyor("retry", run_id, cwd=tmp_path, timeout=60)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert only_run(tmp_path)["state"] == "succeeded"


def test_resume_of_a_run_another_process_drives_sends_nothing(tmp_path: Path) -> None:
    proc, pidfile = start(tmp_path, LONG)
    step = int(pidfile.read_text())
    run = only_run(tmp_path)
    resumed = conveyor("resume", str(run["run_id"]), cwd=tmp_path)
    assert resumed.returncode == 2
    assert f"is being run by process {proc.pid}" in resumed.stderr
    listed = conveyor("events", str(run["run_id"]), cwd=tmp_path).stdout.splitlines()
    kinds = [json.loads(line)["type"] for line in listed]
    # No second engine took the run up, even for a moment: first, then wait, once each.
    assert kinds.count("task_dispatched") == 2 and kinds.count("task_started") == 2
    assert int(pidfile.read_text()) == step and not gone(step, within=0)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
