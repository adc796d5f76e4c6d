"""Forms Prefect, Dagster and Airflow users write: lists of outputs as arguments,
order without data, familiar option names checked when a task is declared."""

from __future__ import annotations

import pytest

from conveyor import task
from conveyor.testing import run_workflow
from tests.steps import familiar


def test_outputs_inside_lists_and_dicts_are_dependencies_and_resolved() -> None:
    spec = familiar.fan_in.spec
    combine = spec.task("combine")
    assert combine.depends == ["fetch", "fetch_2", "fetch_3", "fetch_4"]
    result = run_workflow(familiar.fan_in)
    assert result.state.status == "succeeded"
    # (10+11) + (20+21) + (30+31) + the first of page 9 (90)
    assert result.state.nodes["combine"].outputs()["result"] == 213


def test_order_without_data() -> None:
    spec = familiar.ordered.spec
    assert spec.task("b").depends == ["announce"]
    assert spec.task("c").depends == ["announce"]
    assert spec.task("d").depends == ["b", "c"]
    result = run_workflow(familiar.ordered)
    started = {name: node.started_at for name, node in result.state.nodes.items()}
    assert started["d"] is not None and started["d"] >= max(started["b"], started["c"])  # type: ignore[operator]


def test_familiar_retry_options_become_a_retry_policy() -> None:
    spec = familiar.flaky_fetch.options["retry"]
    assert spec == {"limit": 3, "delays": [2, 5, 15]}
    from contracts.spec import RetryPolicy

    policy = RetryPolicy.model_validate(spec)
    assert [policy.delay_before(n, 0.5) for n in (2, 3, 4, 5)] == [2.0, 5.0, 15.0, 15.0]


def test_a_misspelt_option_is_refused_when_the_task_is_declared() -> None:
    with pytest.raises(TypeError, match=r"unknown option 'retrys' \(did you mean 'retry'\?\)"):

        @task(retrys=3)
        def nope() -> None:
            return None

    with pytest.raises(TypeError, match="did you mean 'timeout'"):
        familiar.announce.with_options(timout=3)


def test_arithmetic_and_ranges_over_parameters_become_expressions() -> None:
    spec = familiar.paged.spec
    assert spec.task("fetch").items == "range(1, (params.pages + 1))"
    result = run_workflow(familiar.paged, {"pages": 2})
    # pages 1 and 2: (10+11) + (20+21), and pages * 100
    assert result.state.nodes["combine"].outputs()["result"] == 62 + 200


def test_looping_in_python_over_a_parameter_says_how_to_fan_out() -> None:
    from conveyor import workflow

    @workflow
    def loops(pages: int = 3) -> None:
        for p in range(1, pages + 1):
            familiar.fetch(p)

    with pytest.raises(TypeError, match=r"task\.map\(span\(1, pages \+ 1\)\)"):
        _ = loops.spec


def test_a_branch_follows_one_path_and_the_join_still_runs() -> None:
    spec = familiar.branching.spec
    assert spec.task("choose").branch and spec.task("join").depends == [
        "path_a",
        "path_b",
        "path_c",
    ]
    result = run_workflow(familiar.branching, {"pick": "b"})
    states = {name: str(node.status) for name, node in result.state.nodes.items()}
    assert states == {
        "choose": "succeeded",
        "path_a": "skipped",
        "path_b": "succeeded",
        "path_c": "skipped",
        "join": "succeeded",
    }
    assert result.state.status == "succeeded"


def test_when_the_branch_fails_nothing_after_it_runs() -> None:
    result = run_workflow(familiar.branching, {"pick": "b"}, failures={"choose": 5})
    states = {name: str(node.status) for name, node in result.state.nodes.items()}
    assert states["choose"] == "failed"
    assert {states[p] for p in ("path_a", "path_b", "path_c", "join")} == {"skipped"}


@pytest.mark.parametrize(
    ("rule", "runs"),
    [
        ("all_succeeded", False),
        ("all_done", True),
        ("none_failed", False),
        ("none_failed_min_one_success", False),
        ("one_success", True),
        ("one_failed", True),
        ("all_failed", False),
    ],
)
def test_trigger_rules_over_a_success_and_a_failure(rule: str, runs: bool) -> None:
    import textwrap

    from contracts.validation import parse_workflow

    workflow = parse_workflow(
        textwrap.dedent(
            f"""
            name: rules
            tasks:
              - {{name: good, script: "true"}}
              - {{name: bad, script: "false", continue_on_failure: false}}
              - {{name: after, depends: [good, bad], trigger_rule: {rule}, script: "true"}}
            """
        )
    )
    result = run_workflow(workflow)
    assert (str(result.state.nodes["after"].status) == "succeeded") is runs, rule


def test_models_paths_enums_and_datetimes_are_parameters_and_results() -> None:
    spec = familiar.typed_config.spec
    assert spec.params["settings"].default == {"name": "nightly", "limit": 10}
    assert spec.params["where"].default == "/data/in"
    assert spec.params["mode"].default == "careful"
    result = run_workflow(familiar.typed_config)
    assert result.state.status == "succeeded", result.state.reason
    assert (
        result.state.nodes["describe"].outputs()["result"]
        == "nightly at /data/in (careful, 2026-12-01)"
    )


class Frame:  # a DataFrame, say
    pass


def test_a_result_the_wire_cannot_carry_is_refused_naming_the_task() -> None:
    with pytest.raises(TypeError, match="task 'make_frame' result: values of type Frame"):

        @task
        def make_frame() -> Frame:
            return Frame()


def test_a_when_naming_two_upstream_tasks_in_one_block_depends_on_both() -> None:
    from conveyor import workflow

    @workflow
    def both() -> None:
        familiar.announce.with_options(name="a")("a")
        familiar.announce.with_options(name="b")("b")
        familiar.announce.with_options(
            name="c",
            when="{{ tasks.a.outputs.result == 'a' and tasks.b.outputs.result == 'b' }}",
        )("c")

    assert both.spec.task("c").depends == ["a", "b"]
    result = run_workflow(both)
    assert result.succeeded and result.task("c").result == "c"
