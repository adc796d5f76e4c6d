"""Typed Python workflows: same spec as YAML, checked wiring, runnable and testable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typedflows import add_up, checked, double, numbers, pipeline, shout, slow_retry

from contracts.errors import InvalidInput
from contracts.validation import parse_workflow
from conveyor import task, workflow
from conveyor.testing import FakeClock, run_workflow

ROOT = Path(__file__).resolve().parents[2]


def test_a_workflow_function_produces_a_checked_spec() -> None:
    spec = pipeline.spec
    names = [t.name for t in spec.tasks]
    assert names == ["numbers", "double", "add_up", "label", "echo-total", "confirm"]
    assert spec.task("double").items == "tasks.numbers.outputs.result"
    assert spec.task("double").args == {"x": "{{ item }}"}
    assert spec.task("label").depends == ["add_up"]
    assert spec.task("confirm").depends == ["add_up", "echo-total"]  # found in the f-strings
    assert spec.params["n"].type == "int" and spec.params["n"].default == 4
    assert spec.timeout == 600


def test_type_mismatch_is_reported_at_definition_with_both_tasks() -> None:
    @workflow
    def wrong(n: int = 3) -> None:
        shout(double(n))

    with pytest.raises(InvalidInput) as info:
        _ = wrong.spec
    assert "task 'shout' parameter 'text' expects str, but task 'double' gives int" in str(
        info.value
    )


def test_mapping_over_something_that_is_not_a_list_of_the_right_type() -> None:
    @workflow
    def wrong(n: int = 3) -> None:
        shout.map(numbers(n))

    with pytest.raises(InvalidInput, match="expects str, but items of task 'numbers' gives int"):
        _ = wrong.spec


def test_parameters_are_type_checked_too() -> None:
    @workflow
    def wrong(word: str = "x") -> None:
        double(word)

    with pytest.raises(InvalidInput, match="expects int, but parameter 'word' gives str"):
        _ = wrong.spec


def test_literal_arguments_are_type_checked_when_the_workflow_is_built() -> None:
    @workflow
    def literal(n: int = 2) -> None:
        double("four")

    expected = "task 'double' parameter 'x' expects int: Input should be a valid integer"
    with pytest.raises(InvalidInput, match=expected):
        _ = literal.spec

    @workflow
    def lax(n: int = 2) -> None:
        double("4")  # what a worker would take (pydantic's lax mode)

    assert lax.spec.tasks[0].args == {"x": "4"}


def test_arguments_that_do_not_fit_fail_the_step_in_one_line() -> None:
    flow = parse_workflow("name: w\ntasks: [{name: d, python: typedflows:double, args: {x: abc}}]")
    result = run_workflow(flow)
    error = result.task("d").error or ""
    assert "task 'double': invalid arguments: Input should be a valid integer" in error
    assert error.endswith("(got 'abc')") and "pydantic.dev" not in error
    said = result.task("d").log_text("stderr")
    assert len(said) == 1 and said[0].startswith("NonRetryableError: task 'double'")


def test_tasks_validate_inputs_and_outputs_when_called_directly() -> None:
    assert double(4) == 8
    assert double("4") == 8  # pydantic's lax mode, as on a worker
    with pytest.raises(Exception, match="invalid arguments"):
        double("four")


def test_unknown_options_and_missing_arguments() -> None:
    with pytest.raises(TypeError, match=r"unknown option 'colour'"):

        @workflow
        def bad() -> None:
            double.with_options(colour="red")(1)

        _ = bad.spec

    @workflow
    def missing() -> None:
        double()

    with pytest.raises(InvalidInput, match="missing arguments: x"):
        _ = missing.spec


def test_python_workflow_and_its_yaml_export_run_identically() -> None:
    exported = yaml.safe_dump(
        pipeline.spec.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    )
    from_yaml = parse_workflow(exported)
    assert from_yaml == pipeline.spec
    a = run_workflow(pipeline, {"n": 5})
    b = run_workflow(from_yaml, {"n": 5})
    assert a.succeeded and b.succeeded
    for name in [t.name for t in pipeline.spec.tasks]:
        assert (a.task(name).state, a.task(name).outputs) == (
            b.task(name).state,
            b.task(name).outputs,
        )
    assert a.task("label").result == "total=20"


def test_fake_clock_makes_long_backoff_and_run_timeouts_instant() -> None:
    clock = FakeClock()
    result = run_workflow(slow_retry, clock=clock, timeout=10)
    assert result.status == "failed" and "timed out after 1800s" in result.reason
    assert clock.now - 1_700_000_000.0 == pytest.approx(1800.0)
    assert result.attempts_of("flaky") == ["failed"]  # the retry an hour later never came


def test_a_task_that_raises_shows_its_own_traceback() -> None:
    result = run_workflow(checked)
    assert result.status == "failed"
    said = result.task("check_positive").log_text("stderr")
    assert said[-1] == "ValueError: -1 is negative"
    frames = [line for line in said if line.lstrip().startswith("File ")]
    assert len(frames) == 1 and "typedflows.py" in frames[0]  # not the @task wrapper's


def cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env={
            **os.environ,
            "CONVEYOR_HOME": str(home),
            "CONVEYOR_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_runs_and_exports_python_workflows(tmp_path: Path) -> None:
    examples = ROOT / "examples"
    done = cli("run", "scoring:scoring", "-p", "size=3", "--json", cwd=examples, home=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [t["state"] for t in result["tasks"]] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "skipped",
    ]
    exported = cli("export", "scoring:scoring", cwd=examples, home=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert yaml.safe_load(exported.stdout)["tasks"][1]["items"] == "tasks.make_batch.outputs.result"
    missing = cli("run", "no_such_module_q:wf", cwd=tmp_path, home=tmp_path)
    assert missing.returncode == 2 and "cannot import 'no_such_module_q'" in missing.stderr
    not_a_workflow = cli("export", "json:dumps", cwd=tmp_path, home=tmp_path)
    assert not_a_workflow.returncode == 2 and "is not a workflow" in not_a_workflow.stderr
    misspelt = cli("run", "scoring:scorin", cwd=examples, home=tmp_path)
    assert misspelt.returncode == 2
    assert "scoring has no 'scorin' (its workflows: scoring)" in misspelt.stderr


def test_cli_runs_a_python_file_by_its_path(tmp_path: Path) -> None:
    # As YAML files are: the path, from anywhere; the file's folder is where its step
    # functions import from.
    done = cli("run", "examples/scoring.py", "-p", "size=3", "--json", cwd=ROOT, home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "succeeded"
    two = "examples/dynamic_pieces.py"
    named = cli("run", f"{two}:process_pieces", "--json", cwd=ROOT, home=tmp_path)
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout)["workflow"] == "process-pieces"
    unnamed = cli("run", two, cwd=ROOT, home=tmp_path)
    assert unnamed.returncode == 2
    assert unnamed.stderr == (
        f"error: {two}: defines 2 workflows (fan_in, process_pieces): name one as {two}:NAME\n"
    )
    checked = cli("validate", "examples/scoring.py", cwd=ROOT, home=tmp_path)
    assert checked.returncode == 0 and "workflow 'scoring', 4 tasks" in checked.stdout
    none = cli("export", "examples/steps.py", cwd=ROOT, home=tmp_path)
    assert none.returncode == 2
    assert none.stderr == (
        "error: examples/steps.py: defines no workflow (decorate one with @conveyor.workflow)\n"
    )
    misspelt = cli("run", "examples/scoring.py:scorin", cwd=ROOT, home=tmp_path)
    assert misspelt.returncode == 2 and "scoring has no 'scorin'" in misspelt.stderr
    missing = cli("run", "examples/no_such_file.py", cwd=ROOT, home=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == "error: examples/no_such_file.py: no such file\n"
    named_yaml = cli("validate", "examples/batch.yaml:batch", cwd=ROOT, home=tmp_path)
    assert named_yaml.returncode == 2
    assert named_yaml.stderr == (
        "error: examples/batch.yaml:batch: a YAML file holds one workflow: name the file"
        " alone (examples/batch.yaml)\n"
    )
    # A file named like a module imported already would run that module's code instead.
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "json.py").write_text("raise SystemExit('never imported')\n")
    shadowed = cli("run", "flows/json.py", cwd=tmp_path, home=tmp_path)
    assert shadowed.returncode == 2
    assert "the module name 'json' is taken by" in shadowed.stderr and "rename" in shadowed.stderr


def test_tasks_must_be_importable_by_workers() -> None:
    def local() -> int:
        return 1

    inner = task(local)

    @workflow
    def uses_local() -> None:
        inner()

    with pytest.raises(InvalidInput, match="module-level function"):
        _ = uses_local.spec


def test_container_steps_from_python() -> None:
    from conveyor import container

    @workflow
    def boxed(n: int = 3) -> None:
        counted = numbers(n)
        container(
            "count",
            "busybox:1.36",
            script='echo "$N" | wc -c',
            env={"N": counted},
            memory="32m",
            network="none",
        )

    spec = boxed.spec
    step = spec.task("count")
    assert step.kind == "container" and step.depends == ["numbers"]
    assert step.container is not None and step.container.memory == "32m"
    assert step.env == {"N": "{{ tasks.numbers.outputs.result }}"}

    @workflow
    def spliced(n: int = 3) -> None:
        container("count", "busybox:1.36", script=f"echo {numbers(n)} | wc -c")

    with pytest.raises(InvalidInput, match="would splice a value into code"):
        _ = spliced.spec


def test_what_a_workflow_function_returns_is_what_its_runs_give_back() -> None:
    @workflow
    def summed(n: int = 4) -> dict[str, object]:
        doubled = double.map(numbers(n))
        return {"total": add_up(doubled), "doubled": doubled, "n": n, "fixed": "v1"}

    assert summed.spec.outputs == {
        "total": "{{ tasks.add_up.outputs.result }}",
        "doubled": "{{ tasks.double.outputs.result }}",
        "n": "{{ params.n }}",
        "fixed": "v1",
    }
    result = run_workflow(summed, {"n": 3})
    assert result.succeeded
    assert result.outputs == {"total": 6, "doubled": [0, 2, 4], "n": 3, "fixed": "v1"}

    @workflow
    def one(n: int = 4) -> object:
        return add_up(numbers(n))

    assert run_workflow(one, {"n": 4}).outputs == {"result": 6}

    @workflow
    def nothing(n: int = 4) -> None:
        add_up(numbers(n))

    assert nothing.spec.outputs == {} and run_workflow(nothing).outputs is None


@workflow
def doubled_sum(n: int = 3) -> dict[str, object]:
    return {"total": add_up(double.map(numbers(n))), "n": n}


@workflow
def one_sum(n: int = 3) -> object:
    return add_up(numbers(n))


def test_a_workflow_called_in_a_workflow_is_a_child_run_whose_outputs_are_its_value() -> None:
    @workflow
    def outer(sizes: list[int] = [2, 3]) -> dict[str, object]:  # noqa: B006
        first = doubled_sum(4)
        each = one_sum.map(sizes)
        return {"first": first["total"], "each": each, "shout": shout(f"n={first['n']}")}

    step = outer.spec.task("doubled-sum")
    assert step.workflow is not None and step.workflow.spec == doubled_sum.spec
    assert step.workflow.params == {"n": 4}
    assert outer.spec.task("one-sum").items == "params.sizes"
    assert outer.spec.task("shout").depends == ["doubled-sum"]
    result = run_workflow(outer)
    assert result.succeeded, result.reason
    # sum(0, 2, 4, 6) for n=4; sum(range(2)), sum(range(3)) for each size.
    assert result.outputs == {"first": 12, "each": [1, 3], "shout": "N=4"}
