"""A run's outputs: what a workflow that succeeded gives back, decided by the core with
its completion, kept through snapshots and replay."""

from __future__ import annotations

import pytest

from contracts.errors import InvalidInput
from contracts.events import RunCompleted
from contracts.validation import parse_workflow
from engine.state import fold, new_state
from engine.state.context import MAX_OUTPUTS_BYTES
from engine.state.snapshot import dump, load
from tests.engine.sim import Sim

SUMS = """
name: sums
params:
  label: {type: str, default: total}
tasks:
  - name: numbers
    script: echo
  - name: square
    depends: [numbers]
    items: tasks.numbers.outputs.result
    script: echo
  - name: sum
    depends: [square]
    script: echo
outputs:
  total: "{{ tasks.sum.outputs.result }}"
  squares: "{{ tasks.square.outputs.result }}"
  said: "{{ params.label }} of run {{ run.workflow }}"
  fixed: [1, {"two": 2}]
"""


def completion(sim: Sim) -> RunCompleted:
    [completed] = [d for d in sim.last_decisions if isinstance(d, RunCompleted)]
    return completed


def run_sums(sim: Sim, *, squares: list[int]) -> None:
    sim.ok("numbers", result=list(range(1, len(squares) + 1)))
    for index, square in enumerate(squares):
        sim.ok("square", index=index, result=square)
    sim.ok("sum", result=sum(squares))


def test_a_run_that_succeeds_gives_back_its_outputs_with_their_types() -> None:
    sim = Sim(SUMS)
    run_sums(sim, squares=[1, 4, 9])
    done = completion(sim)
    assert done.state == "succeeded"
    assert done.outputs == {
        "total": 14,
        "squares": [1, 4, 9],
        "said": "total of run sums",
        "fixed": [1, {"two": 2}],
    }
    assert sim.state.outputs == done.outputs


def test_a_run_that_fails_gives_back_nothing() -> None:
    sim = Sim(SUMS)
    sim.fail("numbers", retryable=False)
    done = completion(sim)
    assert done.state == "failed" and done.outputs is None
    assert sim.state.outputs is None


def test_the_outputs_replay_and_survive_a_snapshot() -> None:
    sim = Sim(SUMS)
    run_sums(sim, squares=[4, 16])
    replayed = new_state(sim.log[0])  # type: ignore[arg-type]
    for event in sim.log[1:]:
        fold(replayed, event)
    assert replayed.outputs == {
        "total": 20,
        "squares": [4, 16],
        "said": "total of run sums",
        "fixed": [1, {"two": 2}],
    }
    assert load(dump(sim.state)).outputs == replayed.outputs


def test_outputs_that_do_not_render_fail_the_run_saying_which() -> None:
    sim = Sim(
        SUMS.replace('"{{ tasks.sum.outputs.result }}"', '"{{ tasks.sum.outputs.result[5] }}"')
    )
    run_sums(sim, squares=[1])
    done = completion(sim)
    assert done.state == "failed" and done.outputs is None
    assert done.reason.startswith("outputs.total: ")


def test_outputs_too_big_to_give_back_fail_the_run() -> None:
    sim = Sim(SUMS)
    sim.ok("numbers", result=[1])
    sim.ok("square", result="x" * MAX_OUTPUTS_BYTES)
    sim.ok("sum", result=1)
    done = completion(sim)
    assert done.state == "failed"
    assert f"over the {MAX_OUTPUTS_BYTES:,} a run gives back" in done.reason


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "{{ tasks.sumz.outputs.result }}",
            "outputs.total: unknown task 'sumz' (did you mean 'sum'?)",
        ),
        ("{{ item }}", "outputs.total: 'item' is not defined in the run's outputs"),
        ("{{ params.lable }}", "outputs.total: unknown parameter 'lable' (did you mean 'label'?)"),
        ("{{ tasks.sum.outputs.count }}", "outputs.total: task 'sum' has no output 'count'"),
    ],
)
def test_outputs_naming_what_is_not_there_are_refused_with_where(value: str, message: str) -> None:
    text = SUMS.replace('"{{ tasks.sum.outputs.result }}"', f'"{value}"')
    with pytest.raises(InvalidInput) as refused:
        parse_workflow(text, source="sums.yaml")
    assert f"sums.yaml:16, {message}" in str(refused.value)
