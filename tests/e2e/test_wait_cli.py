"""A local run waits for an approval given from another terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.commands import conveyor

pytestmark = pytest.mark.timeout(120)

RELEASE = """
name: release
tasks:
  - name: build
    script: echo built
  - name: approval
    depends: [build]
    wait: {}
    timeout: 60s
  - name: ship
    depends: [approval]
    env: {BY: "{{ tasks.approval.outputs.result.by }}"}
    script: echo "shipped, approved by $BY"
"""


def test_a_local_run_waits_for_conveyor_approve(tmp_path: Path) -> None:
    (tmp_path / "release.yaml").write_text(RELEASE)
    env = {**os.environ, "CONVEYOR_HOME": str(tmp_path / ".conveyor")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", "release.yaml", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        listed = conveyor("runs", "--json", cwd=tmp_path)
        runs = json.loads(listed.stdout) if listed.returncode == 0 else []
        if runs:
            shown = json.loads(conveyor("show", runs[0]["run_id"], "--json", cwd=tmp_path).stdout)
            tasks = {t["name"]: t for t in shown["tasks"]}
            if tasks["approval"]["state"] == "running":
                break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not reach its wait step"
        time.sleep(0.1)
    run_id = runs[0]["run_id"]
    wrong = conveyor("approve", run_id[:10], "build", cwd=tmp_path)
    assert wrong.returncode == 2 and "not a wait step" in wrong.stderr
    approved = conveyor("approve", run_id[:10], "approval", "--by", "ada", cwd=tmp_path)
    assert approved.returncode == 0, approved.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads(out)
    tasks = {t["name"]: t for t in report["tasks"]}
    assert tasks["approval"]["outputs"]["result"] == {"approved": True, "by": "ada"}
    assert tasks["ship"]["outputs"]["result"] == "shipped, approved by ada"
