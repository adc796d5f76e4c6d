"""Every snippet in the README and the docs works: workflows validate (and run where
they can here), Python examples run, and every ``conveyor`` command line parses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from contracts.validation import load_workflow
from conveyor.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(file: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", file.read_text(), re.S | re.M)


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env={**os.environ, "CONVEYOR_HOME": str(cwd / ".conveyor"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


YAML = [(f.name, i, text) for f in DOCS for i, text in enumerate(blocks(f, "yaml"))]


@pytest.mark.parametrize(("doc", "index", "text"), YAML, ids=[f"{d}-{i}" for d, i, _ in YAML])
def test_every_workflow_snippet_is_a_valid_workflow(
    doc: str, index: int, text: str, tmp_path: Path
) -> None:
    # Read as a file of the docs folder, as its reader would: a workflow step's file
    # is named relative to it.
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "docs").mkdir()
    snippet = tmp_path / "docs" / f"{doc}-{index}.yaml"
    snippet.write_text(text)
    assert load_workflow(snippet).tasks


def test_the_readme_workflow_runs(tmp_path: Path) -> None:
    (readme,) = blocks(ROOT / "README.md", "yaml")
    (tmp_path / "readme.yaml").write_text(readme)
    done = run_cli(
        "run", "readme.yaml", cwd=tmp_path, env={"CONVEYOR_PYTHON_PATH": str(ROOT / "examples")}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\noutputs: squared=49\n" in done.stdout  # 7 * 7


def test_the_readme_python_workflow_runs(tmp_path: Path) -> None:
    (code,) = blocks(ROOT / "README.md", "python")
    (tmp_path / "readme_flow.py").write_text(code)
    done = run_cli("run", "readme_flow:scoring", "-p", "size=5", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"result": 6.0' in done.stdout  # the mean of 0, 1, 4, 9, 16


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    code = blocks(ROOT / "docs" / "tutorial.md", "python")
    *flow, tests = code
    (tmp_path / "flow.py").write_text("\n\n".join(flow))
    (tmp_path / "test_flow.py").write_text(tests)
    for line in blocks(ROOT / "docs" / "tutorial.md", "sh")[0].splitlines():
        words = shlex.split(line.split("#")[0])
        assert words[0] == "conveyor"
        done = run_cli(*words[1:], cwd=tmp_path)
        assert done.returncode == 0, line + "\n" + done.stdout + done.stderr
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_flow.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout


def command_lines() -> list[tuple[str, str]]:
    found = []
    for file in DOCS:
        for block in blocks(file, "sh"):
            for line in block.splitlines():
                for part in line.split("#")[0].split(";"):
                    part = part.strip().rstrip("&").strip()
                    while re.match(r"^[A-Z_]+=\S+ ", part):  # VAR=value before a command
                        part = part.split(" ", 1)[1]
                    if part.startswith(("conveyor ", "python3 -m conveyor ")):
                        found.append((file.name, part))
    return found


COMMANDS = command_lines()


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[line for _d, line in COMMANDS])
def test_every_command_line_in_the_docs_parses(doc: str, line: str) -> None:
    words = shlex.split(line)
    words = words[words.index("conveyor") + 1 :]
    words = ["0123456789ab" if w in ("RUN", "<run>") else w for w in words]
    # --help after the words: a name or option the command lacks is still a usage error
    # (exit 2), while a complete command line only prints its help (exit 0).
    result = CliRunner().invoke(app, [*words, "--help"])
    assert result.exit_code == 0, f"{doc}: `{line}` does not parse: {result.output}"
    assert "Usage: conveyor" in result.output and "Commands" not in result.output, line


def test_the_docs_have_command_lines_to_check() -> None:
    assert len(COMMANDS) >= 15


def test_nothing_shipped_carries_a_default_password() -> None:
    shipped = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy").rglob("*.yaml"))]
    for file in shipped:
        text = file.read_text()
        for weak in ("guest:guest", "change-me", "password123"):
            assert weak not in text, f"{file.name} holds {weak!r}"
    compose = (ROOT / "docker-compose.yml").read_text()
    published = re.findall(r'"(\S+:\d+:\d+)"', compose)
    assert published and all(port.startswith("127.0.0.1:") for port in published)


@pytest.mark.parametrize(
    ("written", "folder", "target"),
    [
        ("`cd examples && conveyor run scoring:scoring`", "examples", "scoring:scoring"),
        ("`conveyor run examples/scoring.py`", ".", "examples/scoring.py"),
    ],
)
def test_the_readme_python_example_runs_as_the_readme_says(
    tmp_path: Path, written: str, folder: str, target: str
) -> None:
    """Both ways the README runs `examples/scoring.py`, as written there."""
    assert written in (ROOT / "README.md").read_text()
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", target],
        cwd=ROOT / folder,
        env={**os.environ, "CONVEYOR_HOME": str(tmp_path / ".conveyor")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_triggers_quick_start_works_as_written(tmp_path: Path) -> None:
    """The README's signed-webhook walk-through, line by line, on a free port."""
    import json
    import time

    from tests.services import free_port, start_logging_to, wait_for_port

    (block,) = [b for b in blocks(ROOT / "README.md", "sh") if "conveyor server" in b]
    port = str(free_port())
    server_line, *rest = [line for line in block.replace("8080", port).splitlines() if line]
    env = {**os.environ, "CONVEYOR_HOME": str(tmp_path / ".conveyor")}
    words = shlex.split(server_line.rstrip("&"))
    assert words[0] == "GITHUB_SECRET=s3cret" and words[1] == "conveyor"
    # Its output goes to a file: a pipe nobody reads would stall it once full.
    server_log = tmp_path / "server.log"
    server = start_logging_to(
        server_log,
        [sys.executable, "-m", "conveyor", *words[2:]],
        cwd=ROOT,
        env={**env, "GITHUB_SECRET": "s3cret"},
    )
    try:
        wait_for_port(int(port), 30, server)
        script = "set -e\n" + "\n".join(rest)
        done = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr + server_log.read_text()
        answer, _ = json.JSONDecoder().raw_decode(done.stdout)
        assert answer["status"] == "accepted"
        deadline = time.monotonic() + 30
        while True:
            listed = run_cli("runs", "--json", cwd=tmp_path)
            runs = json.loads(listed.stdout)
            if runs and runs[0]["state"] == "succeeded":
                break
            assert time.monotonic() < deadline, listed.stdout
            time.sleep(0.2)
        assert [r["run_id"] for r in runs] == [answer["run_id"]]
        logs = run_cli("logs", answer["run_id"], "checkout", cwd=tmp_path)
        assert "checking out acme/shop at 4f2c1e9" in logs.stdout
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_python_sensor_in_the_triggers_doc_works(tmp_path: Path) -> None:
    (code,) = [c for c in blocks(ROOT / "docs" / "triggers.md", "python") if "def new_orders" in c]
    (tmp_path / "docsensor.py").write_text(code)
    check = (
        "import docsensor\n"
        "result = docsensor.new_orders(None)\n"
        "assert [r.key for r in result.runs] == ['order-0', 'order-1'] and result.cursor == '2'\n"
        "assert docsensor.orders.spec.triggers[0].sensor.python == 'docsensor:new_orders'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_grafana_dashboard_charts_metrics_the_processes_serve() -> None:
    import json

    from conveyor import metrics

    served = {
        collector._name  # type: ignore[attr-defined]
        for collector in (
            metrics.RUNS_FINISHED,
            metrics.TASKS_FINISHED,
            metrics.QUEUE_WAIT,
            metrics.TASK_DURATION,
            metrics.TRIGGER_DECISIONS,
            metrics.WORKER_SLOTS,
        )
    }
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"conveyor_[a-z_]+", target["expr"])
    }
    stripped = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert stripped <= served, stripped - served
    assert len(dashboard["panels"]) >= 6


def test_the_kubernetes_manifests_name_what_conveyor_has() -> None:
    """Settings the manifests set exist, and autoscaling watches the queue workers use."""
    from contracts.topology import task_queue
    from conveyor.settings import Settings

    documents = [
        doc
        for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    kinds = {doc["kind"] for doc in documents}
    assert {"RabbitmqCluster", "StatefulSet", "ScaledObject", "Deployment"} <= kinds
    from contracts.spec import STEP_PATH_VARIABLE

    settings = {f"CONVEYOR_{name.upper()}" for name in Settings.model_fields}
    settings |= {"CONVEYOR_LOG_LEVEL", STEP_PATH_VARIABLE}  # read by the command line
    config = next(
        d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "conveyor"
    )
    assert set(config["data"]) <= settings, set(config["data"]) - settings
    scaled = next(d for d in documents if d["kind"] == "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["queueName"] == task_queue("default")
    rabbit = next(d for d in documents if d["kind"] == "RabbitmqCluster")
    assert rabbit["spec"]["replicas"] == 3
    redis = next(d for d in documents if d["kind"] == "StatefulSet")
    assert redis["spec"]["replicas"] == 6  # three masters, a replica each
