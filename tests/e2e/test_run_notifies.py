"""``conveyor run``, ``resume`` and ``cancel`` deliver the ``notify:`` webhooks of the
runs they drive on the local home, and what a killed one owed is delivered later."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.runlog.sqlite import SqliteRunLog
from tests.e2e.commands import conveyor
from tests.e2e.receiver import Receiver, Sent, until

pytestmark = pytest.mark.timeout(120)

SECRET = "whsec_" + base64.b64encode(b"the receiver's own secret").decode()

TOLD = """
name: told
tasks:
  - name: a
    script: {script}
notify:
  - url: {url}/hook
    on: [running, succeeded, failed, cancelled]
    secret_env: TOLD_SECRET
    attempts: 3
outputs:
  said: "{{{{ tasks.a.outputs.result }}}}"
"""

HELD = "while ! test -f {flag}; do sleep 0.05; done"


def write(tmp_path: Path, receiver: Receiver, script: str = "echo hi") -> Path:
    flow = tmp_path / "told.yaml"
    flow.write_text(TOLD.format(url=receiver.url, script=script))
    return flow


def told(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return conveyor(*args, cwd=cwd, extra_env={"TOLD_SECRET": SECRET})


def started(tmp_path: Path, flow: Path) -> tuple[subprocess.Popen[str], Path]:
    """``conveyor run`` in the background, its stderr in a file."""
    said = tmp_path / "run.err"
    with said.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "run", str(flow)],
            cwd=tmp_path,
            env={
                **os.environ,
                "CONVEYOR_HOME": str(tmp_path / ".conveyor"),
                "TOLD_SECRET": SECRET,
            },
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    return proc, said


def owed(tmp_path: Path) -> list[str]:
    async def read() -> list[str]:
        store = SqliteRunLog(tmp_path / ".conveyor" / "conveyor.db")
        try:
            return [event.id for event in await store.unannounced()]
        finally:
            await store.close()

    return asyncio.run(read())


def ids(sent: list[Sent]) -> set[str]:
    return {each.headers["webhook-id"] for each in sent}


def signed_by_secret(headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks v1 signature, computed here from the spec."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return f"v1,{expected}" in headers["webhook-signature"].split()


def test_conveyor_run_delivers_its_run_changes_signed(tmp_path: Path, receiver: Receiver) -> None:
    done = told("run", str(write(tmp_path, receiver)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    changes = {each.change["type"]: each for each in receiver.sent}
    assert set(changes) == {"dev.conveyor.run.running", "dev.conveyor.run.succeeded"}
    run_id = changes["dev.conveyor.run.succeeded"].change["data"]["run_id"]
    # The end of a run that succeeded carries what it gave back.
    assert changes["dev.conveyor.run.succeeded"].change["data"]["outputs"] == {"said": "hi"}
    assert "outputs" not in changes["dev.conveyor.run.running"].change["data"]
    for each in receiver.sent:
        assert each.headers["webhook-id"] == each.change["id"]
        assert each.change["id"].startswith(run_id)
        assert signed_by_secret(each.headers, each.body)
    assert f"notify delivered: succeeded -> {receiver.url}/hook: HTTP 204 (1 attempt)" in (
        done.stdout
    )
    assert owed(tmp_path) == []
    logged = told("trigger-log", "told", "notify", "--json", cwd=tmp_path)
    assert sorted(r["decision"] for r in json.loads(logged.stdout)) == ["delivered"] * 2

    as_json = told("run", str(tmp_path / "told.yaml"), "--json", cwd=tmp_path)
    notified = json.loads(as_json.stdout)["notified"]
    assert [entry["decision"] for entry in notified] == ["delivered", "delivered"]


def test_a_refused_delivery_is_tried_again_before_the_command_exits(
    tmp_path: Path, receiver: Receiver
) -> None:
    # Two tries refused: the run's end is owed 1 + 2 s after it, past the 1 s after which
    # the command says it is still delivering (one refused try would race that second).
    receiver.refused_tries = 2
    done = told("run", str(write(tmp_path, receiver)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "notify: delivering the run's webhooks" in done.stderr
    assert len(receiver.delivered()) == 2
    assert f"succeeded -> {receiver.url}/hook: HTTP 204 (3 attempts)" in done.stdout
    assert owed(tmp_path) == []


def test_a_delivery_refused_for_good_is_said_and_the_run_keeps_its_exit_code(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.answers = [400, 400]
    done = told("run", str(write(tmp_path, receiver, script="exit 3")), cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # the run failed; the webhook does not change it
    assert f"notify failed: failed -> {receiver.url}/hook: HTTP 400 (1 attempt)" in done.stdout
    assert len(receiver.sent) == 2  # not tried again
    assert owed(tmp_path) == []  # given up on: nothing owed


def test_what_a_killed_run_was_delivering_goes_out_from_the_next_server(
    server: Any, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.refusing = True
    proc, said = started(tmp_path, write(tmp_path, receiver))
    until(lambda: "notify: delivering" in said.read_text(), "the run never waited to deliver")
    until(lambda: len(ids(receiver.sent)) == 2, "the run's end was never tried")
    proc.kill()
    proc.wait()
    assert len(owed(tmp_path)) == 2  # its start and its end
    # By header: a retry the kill cut off mid-body was tried too.
    tried = ids(receiver.sent + receiver.cut)
    receiver.refusing = False
    monkeypatch.setenv("TOLD_SECRET", SECRET)
    served = server(grace=1)
    served.start()
    until(lambda: len(receiver.delivered()) == 2, "the owed changes were never delivered")
    assert {change["id"] for change in receiver.delivered()} == tried
    until(lambda: owed(tmp_path) == [], "the delivered changes stayed owed")


@pytest.mark.parametrize("command", ["resume", "cancel"])
def test_the_command_that_finishes_a_killed_run_delivers_what_it_owed(
    command: str, tmp_path: Path, receiver: Receiver
) -> None:
    flag = tmp_path / "flag"
    receiver.refusing = True
    proc, _ = started(tmp_path, write(tmp_path, receiver, script=HELD.format(flag=flag)))
    until(lambda: receiver.sent != [], "the run's start was never sent")
    proc.kill()  # while its start is refused and its step runs
    proc.wait()
    [start] = owed(tmp_path)
    receiver.refusing = False
    flag.touch()  # the killed run's step ends; a resumed one ends at once
    done = told(command, start.split("/")[0], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    delivered = {change["id"]: change["type"] for change in receiver.delivered()}
    ended = "dev.conveyor.run.succeeded" if command == "resume" else "dev.conveyor.run.cancelled"
    assert sorted(delivered.values()) == sorted(["dev.conveyor.run.running", ended])
    assert start in delivered
    assert "notify delivered: running" in done.stdout
    assert owed(tmp_path) == []
