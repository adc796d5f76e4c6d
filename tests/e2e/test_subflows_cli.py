"""``conveyor run`` of a workflow whose steps are workflows: the child files are read
with the parent's, the children are driven (and locked) by the same process, and a
Ctrl-C that cancels the parent cancels them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.commands import conveyor
from tests.e2e.receiver import until

pytestmark = pytest.mark.timeout(120)

CHILD = """
name: child
params:
  n: {type: int}
tasks:
  - name: twice
    command: [echo, "{{ params.n * 2 }}"]
  - name: hold
    depends: [twice]
    when: params.n > 100
    wait: {}
outputs:
  twice: "{{ tasks.twice.outputs.result }}"
"""

PARENT = """
name: parent
params:
  ns: {type: list, default: [1, 2]}
tasks:
  - name: each
    items: params.ns
    workflow:
      file: flows/child.yaml
      params: {n: "{{ item }}"}
outputs:
  doubled: "{{ [r['twice'] for r in tasks.each.outputs.result] }}"
"""


def write(tmp_path: Path) -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "child.yaml").write_text(CHILD)
    (tmp_path / "parent.yaml").write_text(PARENT)
    return tmp_path / "parent.yaml"


def runs(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(
        conveyor("runs", "--json", *args, cwd=tmp_path).stdout
    )
    return listed


def test_a_local_run_runs_its_child_runs_and_gives_their_outputs(tmp_path: Path) -> None:
    flow = write(tmp_path)
    (tmp_path / "flows" / "child.yaml").rename(tmp_path / "elsewhere.yaml")
    missing = conveyor("run", str(flow), cwd=tmp_path)
    assert missing.returncode == 2
    assert "tasks[0].workflow.file:" in missing.stderr and "child.yaml" in missing.stderr
    (tmp_path / "elsewhere.yaml").rename(tmp_path / "flows" / "child.yaml")

    done = conveyor("run", "parent.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\noutputs: doubled=[2,4]\n" in done.stdout
    # The parent's table and progress only: its children are its items.
    assert "hold" not in done.stdout + done.stderr
    [parent] = runs(tmp_path, "--workflow", "parent")
    children = runs(tmp_path, "--trigger", f"parent:{parent['run_id']}")
    assert sorted((c["workflow"], c["state"]) for c in children) == [("child", "succeeded")] * 2
    assert [r["run_id"] for r in runs(tmp_path, "--top-level")] == [parent["run_id"]]
    # The file is read with the parent's: a change to it after does not change the run.
    (tmp_path / "flows" / "child.yaml").write_text("not: [a workflow")
    shown = json.loads(conveyor("show", str(parent["run_id"]), "--json", cwd=tmp_path).stdout)
    assert shown["outputs"] == {"doubled": [2, 4]}


def test_ctrl_c_cancels_the_parent_and_its_child_runs(tmp_path: Path) -> None:
    write(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", "parent.yaml", "-p", "ns=[500, 600]"],
        cwd=tmp_path,
        env={**os.environ, "CONVEYOR_HOME": str(tmp_path / ".conveyor")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def children() -> list[dict[str, object]]:
        if not (tmp_path / ".conveyor" / "conveyor.db").exists():
            return []  # the run's process has not made its home yet
        return [r for r in runs(tmp_path) if str(r["trigger"]).startswith("parent:")]

    until(lambda: len(children()) == 2, "the child runs did not start")
    # Driven by the run's process, they are not stalled runs for a server to take up.
    assert [(c["state"], c["stalled"]) for c in children()] == [("running", False)] * 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert sorted(str(c["state"]) for c in children()) == ["cancelled", "cancelled"]
    assert all("its parent run" in str(c["reason"]) for c in children())


def test_deleting_a_parent_deletes_its_child_runs_and_their_files(tmp_path: Path) -> None:
    write(tmp_path)
    assert conveyor("run", "parent.yaml", cwd=tmp_path).returncode == 0
    [parent] = runs(tmp_path, "--workflow", "parent")
    children = {str(c["run_id"]) for c in runs(tmp_path, "--workflow", "child")}
    locks = tmp_path / ".conveyor" / "locks"
    assert {p.stem for p in locks.glob("*.lock")} >= {str(parent["run_id"]), *children}

    done = conveyor("delete", str(parent["run_id"]), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    said = [line.removeprefix("deleted ") for line in done.stdout.splitlines()]
    assert said[-1] == parent["run_id"] and set(said[:-1]) == children
    assert runs(tmp_path) == []
    assert list(locks.glob("*.lock")) == []
