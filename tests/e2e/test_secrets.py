"""A secret reaches its step as an environment variable and is stored nowhere in clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.errors import InvalidInput
from contracts.validation import parse_workflow, resolve_params
from tests.e2e.commands import conveyor

SECRET = "s3cr3t-Value-7Q!"

SECRETIVE = """
name: secretive
params:
  token: {from_env: DEMO_TOKEN}
  who: {type: str, default: world}
tasks:
  - name: uses
    env: {TOKEN: "{{ params.token }}", WHO: "{{ params.who }}"}
    script: |
      test "$TOKEN" = "$EXPECTED" || { echo "the step did not get the secret" >&2; exit 9; }
      echo "stdout says $TOKEN to $WHO"
      echo "{\\"token\\": \\"$TOKEN\\"}" > out.json
      echo "$TOKEN"
    outputs: {leaked: out.json}
  - name: fails
    env: {TOKEN: "Bearer {{ params.token }}"}
    script: |
      echo "stderr says $TOKEN" >&2
      exit 3
"""


def test_a_secret_is_masked_everywhere_a_run_is_kept_or_shown(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SECRETIVE)
    # EXPECTED lets the step check it got the very value (an operator's pass-through).
    env = {"DEMO_TOKEN": SECRET, "EXPECTED": SECRET, "CONVEYOR_STEP_ENV": "EXPECTED"}
    ran = conveyor("run", "s.yaml", cwd=tmp_path, extra_env=env)
    assert ran.returncode == 1, ran.stdout + ran.stderr  # 'fails' fails, 'uses' succeeds
    run_id = json.loads(conveyor("runs", "--json", cwd=tmp_path).stdout)[0]["run_id"]
    shown = json.loads(conveyor("show", run_id, "--json", cwd=tmp_path).stdout)
    assert shown["params"]["token"] == {"from_env": "DEMO_TOKEN"}  # where it came from
    tasks = {t["name"]: t for t in shown["tasks"]}
    assert tasks["uses"]["state"] == "succeeded"  # it did receive the value
    assert tasks["uses"]["outputs"] == {
        "result": "stdout says *** to world\n***",
        "leaked": {"token": "***"},
    }
    assert tasks["fails"]["stderr_tail"] == ["stderr says Bearer ***"]
    logs = conveyor("logs", run_id, cwd=tmp_path).stdout
    assert "stdout says *** to world" in logs
    seen = [
        ran.stdout,
        ran.stderr,
        logs,
        conveyor("show", run_id, cwd=tmp_path).stdout,
        conveyor("events", run_id, cwd=tmp_path).stdout,
    ]
    assert all(SECRET not in text for text in seen)
    stored = b"".join(p.read_bytes() for p in (tmp_path / ".conveyor").rglob("*") if p.is_file())
    assert SECRET.encode() not in stored


def test_a_secret_missing_on_the_worker_fails_the_step_saying_so(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SECRETIVE)
    ran = conveyor("run", "s.yaml", "--json", cwd=tmp_path)
    assert ran.returncode == 1
    errors = {t["name"]: t.get("error", "") for t in json.loads(ran.stdout)["tasks"]}
    assert "secret DEMO_TOKEN is not set on this worker" in errors["uses"]


@pytest.mark.parametrize(
    ("params", "use", "message"),
    [
        ("{t: {secret: true}}", "env: {T: '{{ params.t }}'}", "names the worker's environment"),
        ("{t: {from_env: T, default: x}}", "env: {T: '{{ params.t }}'}", "has no default"),
        (
            "{t: {from_env: T}}",
            "command: [echo, '{{ params.t }}']",
            "only reach a step through env",
        ),
        ("{t: {from_env: T}}", "args: {x: '{{ params.t }}'}", "only reach a step through env"),
    ],
)
def test_secrets_are_refused_where_they_would_be_kept(params: str, use: str, message: str) -> None:
    step = {"args": "python: teststeps:add", "command": ""}.get(use.split(":")[0], "script: 'true'")
    lines = [f"    {line}" for line in (step, use) if line]
    text = f"name: w\nparams: {params}\ntasks:\n  - name: t\n" + "\n".join(lines) + "\n"
    with pytest.raises(InvalidInput, match=message):
        parse_workflow(text)


def test_a_secret_is_never_given_at_submit_time() -> None:
    workflow = parse_workflow(
        "name: w\nparams: {t: {from_env: T}}\ntasks:\n  - name: a\n    env: {T: '{{ params.t }}'}\n"
        "    script: 'true'\n"
    )
    with pytest.raises(InvalidInput, match="a secret is not given here"):
        resolve_params(workflow, {"t": "typed-in"})
    assert resolve_params(workflow, {})["t"] != "typed-in"
