"""``conveyor logs -f`` on a local fan-out as it runs: every line once, as ``logs`` has them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.commands import conveyor

pytestmark = pytest.mark.timeout(120)

ITEMS = 2000

STEP = """
import time

def say(i: int) -> int:
    print(f"hello {i}")
    time.sleep(0.01)
    print(f"bye {i}")
    return i
"""

WORKFLOW = """
name: talkative
tasks:
  - name: gate
    script: |
      echo open
      while [ ! -f {flag} ]; do sleep 0.05; done
  - name: each
    depends: [gate]
    items: "{{{{ range({items}) }}}}"
    python: talk:say
    args: {{i: "{{{{ item }}}}"}}
"""


def test_following_a_fan_out_prints_each_line_once(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    (tmp_path / "talk.py").write_text(STEP)
    (tmp_path / "wf.yaml").write_text(WORKFLOW.format(flag=flag, items=ITEMS))
    env = {
        **os.environ,
        "CONVEYOR_HOME": str(tmp_path / ".conveyor"),
        "CONVEYOR_LOG_LEVEL": "warning",
        "PYTHONPATH": str(tmp_path),
    }

    command = [sys.executable, "-m", "conveyor"]
    output = tmp_path / "run.out"
    with output.open("w") as out:  # a file, not a pipe nobody reads while it runs
        run = subprocess.Popen(
            [*command, "run", "wf.yaml"], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    follower: subprocess.Popen[str] | None = None
    try:
        listed: list[dict[str, str]] = []
        while not listed:  # until the run is recorded
            assert run.poll() is None, output.read_text()
            runs = conveyor("runs", "--json", cwd=tmp_path)  # exit 2 until the home is made
            listed = json.loads(runs.stdout) if runs.returncode == 0 else []
        run_id = listed[0]["run_id"]
        follower = subprocess.Popen(
            [*command, "logs", run_id, "-f"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None
        # The gate's line has come through the follow: the fan-out starts only now.
        assert follower.stdout.readline() == "gate#1 stdout| open\n"
        flag.touch()
        rest, errors = follower.communicate(timeout=90)  # it ends with the run
        assert follower.returncode == 0, errors
        assert run.wait(timeout=30) == 0, output.read_text()
    finally:
        run.kill()
        if follower is not None:  # a follow of a run killed here would wait for ever
            follower.kill()
    followed = ["gate#1 stdout| open", *rest.splitlines()]
    assert len(followed) == len(set(followed)) == 1 + 2 * ITEMS
    stored = conveyor("logs", run_id, cwd=tmp_path).stdout.splitlines()
    assert sorted(followed) == sorted(stored)
