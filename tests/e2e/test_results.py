"""Big results travel by reference for every step kind; a settable ceiling names itself."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.commands import conveyor

STEPS = Path(__file__).resolve().parents[1] / "steps"

BIG = """
name: big
tasks:
  - name: printed
    command: [python3, -c, "import json; print(json.dumps(list(range(400000))))"]
  - name: returned
    python: teststeps:numbers
    args: {{n: 400000}}
  - name: used
    depends: [printed, returned]
    python: teststeps:total
    args: {{values: "{{{{ tasks.printed.outputs.result }}}}"}}
"""


def test_a_result_of_megabytes_from_any_step_kind_reaches_its_consumer(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(BIG.format())
    env = {"CONVEYOR_PYTHON_PATH": str(STEPS)}
    done = conveyor("run", "big.yaml", "--json", cwd=tmp_path, extra_env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    used = next(t for t in report["tasks"] if t["name"] == "used")
    assert used["outputs"]["result"] == sum(range(400000))
    # The log holds references, not the 2.8 MB values.
    run_id = report["run_id"]
    events = conveyor("events", run_id, cwd=tmp_path).stdout
    assert len(events) < 200_000
    assert events.count('"$claim"') == 2


def test_the_ceiling_is_settable_and_its_error_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(BIG.format())
    env = {"CONVEYOR_PYTHON_PATH": str(STEPS), "CONVEYOR_MAX_RESULT_BYTES": "1000000"}
    done = conveyor("run", "big.yaml", "--json", cwd=tmp_path, extra_env=env)
    assert done.returncode == 1
    tasks = {t["name"]: t for t in json.loads(done.stdout)["tasks"]}
    for name in ("printed", "returned"):
        assert tasks[name]["state"] == "failed"
        assert "over the 1,000,000-byte ceiling (CONVEYOR_MAX_RESULT_BYTES)" in tasks[name]["error"]
