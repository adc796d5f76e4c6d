"""The command line as a new user meets it: clear refusals, help everywhere, no surprises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from conveyor.cli.app import app
from tests.e2e.commands import conveyor
from tests.services import free_port

FAILING = """
name: failing
tasks:
  - name: boom
    script: |
      echo "reading config" >&2
      echo "config file /etc/app.conf not found" >&2
      exit 3
"""


def test_version(tmp_path: Path) -> None:
    done = conveyor("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("conveyor ")


def test_unknown_choices_are_refused_with_the_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(FAILING)
    ran = conveyor("run", "f.yaml", "--json", cwd=tmp_path)
    assert ran.returncode == 1
    run_id = json.loads(ran.stdout)["run_id"]
    logs = conveyor("logs", run_id, "nosuchtask", cwd=tmp_path)
    assert logs.returncode == 2
    assert f"run {run_id} has no task 'nosuchtask'; its tasks: boom" in logs.stderr
    runs = conveyor("runs", "--state", "bogus", cwd=tmp_path)
    assert runs.returncode == 2
    said = " ".join(runs.stderr.replace("│", " ").split())
    assert "'bogus' is not one of 'running', 'succeeded', 'failed', 'cancelled'" in said


def test_a_failed_run_shows_what_its_step_wrote_last(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(FAILING)
    ran = conveyor("run", "f.yaml", cwd=tmp_path)
    assert ran.returncode == 1
    assert "config file /etc/app.conf not found" in ran.stdout
    run_id = json.loads(conveyor("runs", "--json", cwd=tmp_path).stdout)[0]["run_id"]
    shown = json.loads(conveyor("show", run_id, "--json", cwd=tmp_path).stdout)
    assert shown["tasks"][0]["stderr_tail"] == [
        "reading config",
        "config file /etc/app.conf not found",
    ]


def test_homes_are_never_a_silent_surprise(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    listed = conveyor("runs", "--home", str(missing), cwd=tmp_path)
    assert listed.returncode == 2 and "no runs here" in listed.stderr
    assert not missing.exists()  # reading does not create it
    (tmp_path / "ok.yaml").write_text("name: ok\ntasks: [{name: a, script: 'true'}]\n")
    ran = conveyor("run", "ok.yaml", "--home", str(missing), cwd=tmp_path)
    assert ran.returncode == 0
    assert f"creating the local home {missing}" in ran.stderr


def test_bad_parameters_and_files(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: p\nparams: {a: {type: str}}\ntasks: [{name: t, script: 'true'}]\n"
    )
    twice = conveyor("run", "p.yaml", "-p", "a=1", "-p", "a=2", cwd=tmp_path)
    assert twice.returncode == 2 and "parameter 'a' is given twice" in twice.stderr
    (tmp_path / "latin.yaml").write_bytes(b"name: w\n# caf\xe9\ntasks: []\n")
    latin = conveyor("validate", "latin.yaml", cwd=tmp_path)
    assert latin.returncode == 2
    assert "latin.yaml:2: not UTF-8 text: byte 0xe9 at byte offset 13" in latin.stderr


def test_parameters_from_a_file_with_the_command_line_over_them(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: p\nparams: {a: {type: str}, n: {type: int, default: 1}, tags: {type: list}}\n"
        "tasks: [{name: t, env: {A: '{{ params.a }}'}, script: 'echo \"$A\"'}]\n"
    )
    (tmp_path / "values.yaml").write_text("a: from the file\nn: 3\ntags: [x, y]\n")
    done = conveyor("run", "p.yaml", "-f", "values.yaml", "-p", "a=from -p", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["params"] == {"a": "from -p", "n": 3, "tags": ["x", "y"]}
    assert result["tasks"][0]["outputs"]["result"] == "from -p"
    (tmp_path / "wrong.json").write_text('{"a": "ok",\n "n": "3", "tag": []}')
    wrong = conveyor("run", "p.yaml", "--params-file", "wrong.json", cwd=tmp_path)
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines() == [
        "error: 2 problems",
        "  wrong.json:2, n: expected int, got str '3'",
        "  wrong.json:2, tag: unknown parameter 'tag' (known: a, n, tags)",
    ]
    checked = conveyor("validate", "p.yaml", "-f", "wrong.json", cwd=tmp_path)
    assert (checked.returncode, checked.stderr) == (wrong.returncode, wrong.stderr)
    fine = conveyor("validate", "p.yaml", "-f", "values.yaml", "-p", "n=4", cwd=tmp_path)
    assert fine.returncode == 0 and "p.yaml: ok" in fine.stderr + fine.stdout
    piped = conveyor(
        "run", "p.yaml", "-f", "-", "--json", cwd=tmp_path, stdin='{"a": "in", "tags": []}'
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["params"] == {"a": "in", "n": 1, "tags": []}
    not_a_map = conveyor("validate", "p.yaml", "-f", "-", cwd=tmp_path, stdin="- a\n")
    assert "stdin:1: a parameters file is a mapping" in not_a_map.stderr
    missing = conveyor("run", "p.yaml", "-f", "nowhere.yaml", cwd=tmp_path)
    assert missing.returncode == 2
    assert "nowhere.yaml: cannot read parameters file: No such file" in missing.stderr
    assert conveyor("runs", "--json", cwd=tmp_path).stdout.count('"run_id"') == 2


def test_the_problem_count_matches_the_problems_listed(tmp_path: Path) -> None:
    (tmp_path / "two.yaml").write_text(
        "name: two\ntasks:\n  - {name: a, script: x, bogus: 1}\n  - {name: b, script: y, nope: 2}\n"
    )
    done = conveyor("validate", "two.yaml", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == "error: 2 problems"
    assert len(lines) == 3 and all(line.startswith("  two.yaml:") for line in lines[1:])


def _options(command: Any, name: str = "conveyor") -> list[tuple[str, Any]]:
    found = [(name, p) for p in command.params]
    for sub_name, sub in getattr(command, "commands", {}).items():
        found += _options(sub, f"{name} {sub_name}")
    return found


def test_every_option_has_help_and_booleans_read_both_ways() -> None:
    params = _options(typer.main.get_command(app))
    assert len(params) > 40
    no_help = [f"{cmd} {p.name}" for cmd, p in params if not getattr(p, "help", None)]
    assert no_help == []
    one_way = [
        f"{cmd} {'/'.join(p.opts)}"
        for cmd, p in params
        if getattr(p, "is_flag", False) and not p.secondary_opts and p.name != "version"
    ]
    assert one_way == []
    assert any(p.secondary_opts == ["--no-json"] for _cmd, p in params)  # the check sees flags


def test_validate_checks_what_the_steps_need_here(tmp_path: Path) -> None:
    (tmp_path / "needs.yaml").write_text(
        "name: needs\ntasks:\n"
        "  - name: fetch\n    script: cat in\n    artifacts: {in: {in: 's3://bucket/key'}}\n"
        "  - name: compute\n    python: no_such_module_here:run\n"
    )
    done = conveyor("validate", "needs.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert (
        "tasks[0].artifacts.in.in: s3:// URLs need a package that is not installed" in done.stderr
    )
    assert "Install s3fs" in done.stderr
    assert "tasks[1].python: cannot import 'no_such_module_here' for task 'compute'" in done.stderr


def test_a_bad_artifact_store_url_is_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text("name: ok\ntasks: [{name: a, script: 'true'}]\n")
    done = conveyor(
        "run", "ok.yaml", cwd=tmp_path, extra_env={"CONVEYOR_ARTIFACTS_URL": "nosuch://bucket/x"}
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: CONVEYOR_ARTIFACTS_URL")
    assert "no filesystem serves nosuch:// URLs" in done.stderr
    assert "Traceback" not in done.stderr


def test_python_steps_import_from_the_workflow_s_folder_first(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "helpers.py").write_text("def which() -> str:\n    return 'next to the workflow'\n")
    (tmp_path / "helpers.py").write_text("def which() -> str:\n    return 'current directory'\n")
    (flows / "wf.yaml").write_text("name: wf\ntasks: [{name: a, python: 'helpers:which'}]\n")
    done = conveyor("run", "flows/wf.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"][0]["outputs"]["result"] == "next to the workflow"


def test_a_module_beside_the_workflow_never_stands_in_for_the_engine_s(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    marker = tmp_path / "hijacked"
    for folder in (flows, tmp_path):
        for name in ("uvloop", "yaml", "msgspec"):
            (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write('{name} ')\n")
    (flows / "ok.yaml").write_text("name: ok\ntasks: [{name: a, script: 'true'}]\n")
    # The installed command, as users run it. (`python -m` puts the current directory
    # first on the import path before any of Conveyor's code runs: Python's own rule.)
    conveyor_command = shutil.which("conveyor")
    assert conveyor_command is not None
    done = subprocess.run(
        [conveyor_command, "run", "flows/ok.yaml"],
        cwd=tmp_path,
        env={**os.environ, "CONVEYOR_HOME": str(tmp_path / ".conveyor")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), marker.read_text()


def test_what_a_run_writes_is_readable_by_its_user_only(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(
        "name: ok\ntasks:\n  - name: a\n    script: echo hi > f.txt\n"
        "    artifacts: {out: {f: f.txt}}\n"
    )
    done = conveyor("run", "ok.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    home = tmp_path / ".conveyor"
    written = [home, *home.rglob("*")]
    assert any(p.name == "conveyor.db" for p in written)
    assert any("artifacts" in p.parts and p.is_file() for p in written)
    loose = [str(p) for p in written if p.stat().st_mode & 0o077]
    assert loose == []


def test_a_parameter_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    from contracts.errors import InvalidInput
    from contracts.validation import load_workflow, resolve_params

    hello = Path(__file__).resolve().parents[2] / "examples" / "hello.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", str(hello), b"-p", b"who=caf\xe9"],
        cwd=tmp_path,
        env={**os.environ, "CONVEYOR_HOME": str(tmp_path / ".conveyor")},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert b"parameter 'who' is not UTF-8 text: byte 0xe9 at offset 3" in done.stderr
    with pytest.raises(InvalidInput, match="not UTF-8 text"):
        resolve_params(load_workflow(hello), {"who": "caf\udce9"})


def test_a_command_gives_up_on_servers_that_do_not_answer(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    (tmp_path / "w.yaml").write_text("name: w\ntasks: [{name: a, script: 'true'}]\n")
    down = {
        "CONVEYOR_AMQP_URL": f"amqp://guest:secret-pw@127.0.0.1:{closed}/",
        "CONVEYOR_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
        "CONVEYOR_CONNECT_WITHIN": "1",
    }
    submitted = conveyor("submit", "w.yaml", cwd=tmp_path, extra_env=down, timeout=60)
    assert submitted.returncode == 1
    assert f"RabbitMQ not reachable at 127.0.0.1:{closed} within 1s" in submitted.stderr
    assert "secret-pw" not in submitted.stderr
    listed = conveyor("runs", cwd=tmp_path, extra_env=down, timeout=60)
    assert listed.returncode == 1 and "error: Redis not reachable" in listed.stderr
    assert "Traceback" not in listed.stderr + submitted.stderr
    cluster = {**down, "CONVEYOR_REDIS_URL": f"redis+cluster://127.0.0.1:{closed}"}
    listed = conveyor("runs", cwd=tmp_path, extra_env=cluster, timeout=60)
    assert listed.returncode == 1, listed.stderr
    assert "error: Redis not reachable: Redis Cluster cannot be connected" in listed.stderr
    assert "Traceback" not in listed.stderr


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CONVEYOR_REDIS_URL", "http://:secret-pw@host/0", "got http://…"),
        ("CONVEYOR_REDIS_URL", "localhost:6379", "got no scheme"),
        ("CONVEYOR_AMQP_URL", "amqp://a/,amqp:/b-secret-pw", "got no scheme"),
        ("CONVEYOR_SIGNING_KEYS", "worker:w1:secret-pw", "a shared secret has 16 characters"),
    ],
)
def test_a_bad_service_setting_is_named_and_never_repeated(
    tmp_path: Path, variable: str, value: str, says: str
) -> None:
    settings = {
        "CONVEYOR_AMQP_URL": "amqp://127.0.0.1:1/",
        "CONVEYOR_REDIS_URL": "redis://127.0.0.1:1/0",
        variable: value,
    }
    (tmp_path / "w.yaml").write_text("name: w\ntasks: [{name: a, script: 'true'}]\n")
    submitted = conveyor("submit", "w.yaml", cwd=tmp_path, extra_env=settings, timeout=60)
    assert submitted.returncode == 2, submitted.stderr
    assert f"{variable}: " in submitted.stderr and says in submitted.stderr
    assert "secret-pw" not in submitted.stderr and "Traceback" not in submitted.stderr


def test_tokens_are_made_listed_and_revoked(tmp_path: Path) -> None:
    assert conveyor("token", "list", cwd=tmp_path).stdout.startswith("no tokens made")
    made = conveyor("token", "create", "--scope", "run", "--name", "ci", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    token_id = secret.split("_")[1]
    listed = conveyor("token", "list", cwd=tmp_path).stdout
    assert listed.split() == [token_id, "run", "active", "ci"]
    assert secret not in listed  # only its hash is kept
    assert conveyor("token", "revoke", token_id, cwd=tmp_path).returncode == 0
    assert conveyor("token", "list", cwd=tmp_path).stdout.split()[2] == "revoked"
    again = conveyor("token", "revoke", token_id, cwd=tmp_path)
    assert again.returncode == 2 and f"no active token {token_id!r}" in again.stderr
    bad = conveyor("token", "create", "--scope", "god", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown scope 'god' (read, run, admin)" in bad.stderr


def test_a_worker_for_a_pool_no_task_can_name_is_refused(tmp_path: Path) -> None:
    refused = conveyor("worker", "--pool", "gpu pool", cwd=tmp_path, timeout=60)
    assert refused.returncode == 2
    assert "--pool: 'gpu pool' is not a pool name" in refused.stderr
