"""The ``conveyor`` command as a user runs it: real files, exit codes, what it prints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from contracts.errors import ConveyorError, InvalidInput, NotFound, Problem
from tests.e2e.commands import conveyor, conveyor_process

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_hello_example(tmp_path: Path) -> None:
    done = conveyor_process(
        "run", str(EXAMPLES / "hello.yaml"), "-p", "who=tests", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "succeeded"
    assert result["tasks"][0]["outputs"]["result"] == "hello, tests"


def test_diamond_example_passes_outputs(tmp_path: Path) -> None:
    done = conveyor("run", str(EXAMPLES / "diamond.yaml"), "-p", "base=6", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tasks = {t["name"]: t for t in json.loads(done.stdout)["tasks"]}
    assert tasks["combine"]["outputs"]["result"] == {"label": "diamond", "square": 36, "half": 3.0}


def test_batch_example_then_inspect_history_outputs_and_logs(tmp_path: Path) -> None:
    started = time.monotonic()
    done = conveyor("run", str(EXAMPLES / "batch.yaml"), "-p", "size=9", cwd=tmp_path)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "run succeeded" in done.stdout
    # Progress went to stderr as the tasks moved (not a terminal here: one line per change).
    assert "process: running (9 items)" in done.stderr
    # ... each change on a line of its own, whole, however long its reason.
    skipped = "alert: skipped: when \"tasks.report.outputs.result['mean'] < params.alert_below\""
    assert f"{skipped} was false\n" in done.stderr
    print(f"batch example (9 items): {took:.2f}s")

    listed = conveyor("runs", "--json", cwd=tmp_path)
    [row] = json.loads(listed.stdout)
    assert row["workflow"] == "batch" and row["state"] == "succeeded"
    run_id = row["run_id"]

    shown = json.loads(conveyor("show", run_id[:8], "--json", cwd=tmp_path).stdout)
    tasks = {t["name"]: t for t in shown["tasks"]}
    assert tasks["process"]["items"] == 9 and tasks["process"]["retries"] == 3  # ids 0, 3, 6
    assert tasks["report"]["outputs"]["result"]["items"] == 9
    assert tasks["alert"]["state"] == "skipped"

    logs = conveyor("logs", run_id[:8], "process", cwd=tmp_path).stdout.splitlines()
    assert "process[3]#1 stderr| upstream service unavailable" in logs
    assert "process[3]#2 stderr| scoring item 3 (attempt 2)" in logs
    item = conveyor("logs", run_id[:8], "process", "--index", "3", cwd=tmp_path).stdout
    assert {line.split(" ")[0] for line in item.splitlines()} == {"process[3]#1", "process[3]#2"}
    unnamed = conveyor("logs", run_id[:8], "--index", "3", cwd=tmp_path)
    assert unnamed.returncode == 2 and "--index picks an item of a task" in unnamed.stderr
    beyond = conveyor("logs", run_id[:8], "process", "--index", "9", cwd=tmp_path)
    assert beyond.returncode == 2 and "task 'process' has 9 item(s), 0 to 8" in beyond.stderr
    assert conveyor("artifacts", run_id[:8], cwd=tmp_path).stdout == "no artifacts\n"

    events = [
        json.loads(line) for line in conveyor("events", run_id, cwd=tmp_path).stdout.splitlines()
    ]
    assert events[0]["type"] == "run_submitted" and events[-1]["type"] == "run_completed"
    assert sum(e["type"] == "retry_scheduled" for e in events) == 3

    human = conveyor("show", run_id[:8], cwd=tmp_path)
    assert human.returncode == 0 and "process" in human.stdout and "succeeded" in human.stdout
    lines = human.stdout.splitlines()
    assert lines[0] == f"run {run_id} · batch"  # piped: nothing padded to the table's width
    assert not [line for line in lines if line != line.rstrip()]


def test_failed_run_exits_1(tmp_path: Path) -> None:
    wf = tmp_path / "fail.yaml"
    wf.write_text(
        "name: fail\ntasks:\n  - name: a\n    script: exit 3\n"
        "  - name: b\n    depends: [a]\n    script: echo\n"
    )
    done = conveyor("run", str(wf), "--json", cwd=tmp_path)
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["state"] == "failed" and "exit code 3" in result["reason"]
    assert [t["state"] for t in result["tasks"]] == ["failed", "skipped"]


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (
            "name: x\ntasks:\n  - name: a\n    script: echo\n    bogus: 1\n",
            [],
            "bad.yaml:5, tasks[0].bogus: unknown field",
        ),
        ("name: x\ntasks: [\n", [], "malformed YAML"),
        (
            "name: x\nparams: {n: 1}\ntasks:\n  - name: a\n    script: echo\n",
            ["-p", "n=abc"],
            "n: expected int, got 'abc'",
        ),
        (
            "name: x\nparams: {n: {type: int}}\ntasks:\n  - name: a\n    script: echo\n",
            [],
            "n: missing required parameter",
        ),
        ("name: x\ntasks:\n  - name: a\n    script: echo\n", ["-p", "nokey"], "expected key=value"),
    ],
    ids=["unknown-field", "malformed", "param-type", "param-missing", "param-syntax"],
)
def test_invalid_input_exits_2_and_starts_nothing(
    tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    wf = tmp_path / "bad.yaml"
    wf.write_text(content)
    done = conveyor("run", str(wf), *args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / ".conveyor").exists()  # nothing half-started


def test_validate_and_schema(tmp_path: Path) -> None:
    ok = conveyor("validate", str(EXAMPLES / "batch.yaml"), cwd=tmp_path)
    assert ok.returncode == 0 and "ok" in ok.stdout
    single = tmp_path / "single.yaml"
    single.write_text("name: single\ntasks:\n  - name: a\n    script: 'true'\n")
    one = conveyor("validate", str(single), cwd=tmp_path)
    assert one.stdout.strip() == f"{single}: ok (workflow 'single', 1 task)"
    wf = tmp_path / "cycle.yaml"
    wf.write_text(
        "name: c\ntasks:\n  - name: a\n    depends: [b]\n    script: x\n"
        "  - name: b\n    depends: [a]\n    script: x\n"
    )
    bad = conveyor("validate", str(wf), cwd=tmp_path)
    assert bad.returncode == 2 and "dependency cycle: a -> b -> a" in bad.stderr
    schema = json.loads(conveyor("schema", cwd=tmp_path).stdout)
    assert schema["title"] == "Conveyor workflow" and "tasks" in schema["required"]


def test_unknown_run_is_an_input_error(tmp_path: Path) -> None:
    conveyor("run", str(EXAMPLES / "hello.yaml"), "--json", cwd=tmp_path)
    done = conveyor("show", "zzzz", cwd=tmp_path)
    assert done.returncode == 2 and "no run matches 'zzzz'" in done.stderr


def test_every_command_has_help(tmp_path: Path) -> None:
    # The command itself, as a process; then every command and sub-command in this
    # process (a Python start-up each would cost a second apiece).
    done = conveyor_process("--help", cwd=tmp_path)
    assert done.returncode == 0 and "Usage" in done.stdout
    from typer.main import get_command
    from typer.testing import CliRunner

    from conveyor.cli.app import app

    def paths(command: Any, words: list[str]) -> list[list[str]]:
        below = getattr(command, "commands", {})
        found = [words]
        for name, sub in below.items():
            found += paths(sub, [*words, name])
        return found

    every = paths(get_command(app), [])[1:]
    assert {"run", "validate", "runs", "show", "coordinator", "worker", "server"} <= {
        words[0] for words in every
    }
    for words in every:
        result = CliRunner().invoke(app, [*words, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, words


def test_container_example_and_its_artifacts(
    tmp_path: Path, busybox_image: str, container_runtime: object
) -> None:
    runtime: Any = container_runtime
    env = {
        "CONVEYOR_CONTAINER_RUNTIME": runtime.resolve(),
        "CONVEYOR_CONTAINER_GLOBAL_ARGS": " ".join(runtime.global_args),
        "CONVEYOR_CONTAINER_RUN_ARGS": " ".join(runtime.run_args),
    }
    done = conveyor(
        "run",
        str(EXAMPLES / "containers.yaml"),
        "-p",
        f"image={busybox_image}",
        "--json",
        cwd=tmp_path,
        extra_env=env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tasks"][-1]["outputs"]["result"] == {"chunks": 4, "words": 200}
    listed = json.loads(conveyor("artifacts", result["run_id"], "--json", cwd=tmp_path).stdout)
    assert {(r["task"], r["name"]) for r in listed} >= {
        ("make", "input"),
        ("split", "parts"),
        ("count", "count"),
    }
    assert sum(1 for r in listed if r["task"] == "count") == 4
    got = conveyor(
        "artifact",
        "get",
        result["run_id"],
        "count",
        "count",
        "--index",
        "3",
        "-o",
        str(tmp_path / "c3.txt"),
        cwd=tmp_path,
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "c3.txt").read_text().strip() == "50"


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (NotFound("no such thing here"), 2),
        (InvalidInput([Problem("no such thing here", path="file")]), 2),
        (ConveyorError("no such thing here"), 1),
    ],
)
def test_an_error_a_command_lets_through_is_said_with_its_exit_code(
    raised: ConveyorError, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every command turns the errors it expects into exit 2 itself; main() is the net
    # under them, for what one lets through.
    from conveyor.cli import app as cli

    def fails(*args: object) -> None:
        raise raised

    monkeypatch.setattr(cli, "step_import_paths", fails)
    done = conveyor("validate", str(EXAMPLES / "hello.yaml"), cwd=tmp_path)
    assert done.returncode == code
    assert "error: " in done.stderr and "no such thing here" in done.stderr
    assert "Traceback" not in done.stderr
