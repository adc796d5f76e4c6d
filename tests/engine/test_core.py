"""Table-driven tests of fold + decide: given these events, the core decides this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from contracts.events import RetryScheduled, RunCompleted, TaskExpanded, TaskSkipped
from engine.state.model import DISPATCH_WINDOW
from tests.engine.sim import Sim

CHAIN = """
name: chain
tasks:
  - name: a
    script: echo
  - name: b
    depends: [a]
    script: echo
  - name: c
    depends: [b]
    script: echo
"""

DIAMOND = """
name: diamond
tasks:
  - name: a
    script: echo
  - name: b
    depends: [a]
    script: echo
  - name: c
    depends: [a]
    script: echo
  - name: d
    depends: [b, c]
    script: echo
"""

FAN_OUT_FROM_SRC = """
name: f
tasks:
  - name: src
    script: echo
  - name: each
    depends: [src]
    items: tasks.src.outputs.result
    command: [echo, "{{ item }}"]
"""


@dataclass
class Case:
    workflow: str
    steps: Callable[[Sim], object]
    statuses: dict[str, str]
    run: str
    last_dispatched: list[tuple[str, int, int]] | None = None
    params: dict[str, object] = field(default_factory=dict)


def _chain_ok(s: Sim) -> None:
    assert s.dispatched() == [("a", 0, 1)]
    s.ok("a")
    assert s.dispatched() == [("b", 0, 1)]
    s.ok("b")
    s.ok("c")


def _diamond_parallel(s: Sim) -> None:
    s.ok("a")
    assert sorted(s.dispatched()) == [("b", 0, 1), ("c", 0, 1)]
    s.ok("b")
    assert s.dispatched() == []  # d waits for c
    s.ok("c")
    assert s.dispatched() == [("d", 0, 1)]


def _fail_skips_dependents(s: Sim) -> None:
    s.fail("a", retryable=False)


def _retry_then_succeed(s: Sim) -> None:
    s.fail("a")
    [scheduled] = [d for d in s.last_decisions if isinstance(d, RetryScheduled)]
    assert scheduled.attempt == 2 and scheduled.due > s.now
    s.tick(5)
    s.fire("a", attempt=2)
    assert s.dispatched() == [("a", 0, 2)]
    s.ok("a", attempt=2)
    s.ok("b")
    s.ok("c")


def _retries_exhausted(s: Sim) -> None:
    s.fail("a")
    s.fire("a", attempt=2)
    s.fail("a", attempt=2)
    assert not any(isinstance(d, RetryScheduled) for d in s.last_decisions)


def _failure_kind_not_in_policy(s: Sim) -> None:
    s.fail("a", reason="start")  # policy retries error and timeout only


def _late_result_of_superseded_attempt(s: Sim) -> None:
    s.fail("a")
    s.fire("a", attempt=2)
    s.ok("a", attempt=1, result="late")  # attempt 1 was superseded: recorded, ignored
    assert s.state.nodes["a"].instances[0].result is None
    s.ok("a", attempt=2, result="fresh")
    assert s.state.nodes["a"].instances[0].result == "fresh"
    s.ok("b")
    s.ok("c")


def _duplicate_delivery(s: Sim) -> None:
    s.ok("a", result=1)
    first = list(s.log)
    s.ok("a", result=1)  # redelivered
    assert s.log == first
    s.ok("b")
    s.ok("c")


def _continue_on_failure(s: Sim) -> None:
    s.fail("a", retryable=False)
    assert s.dispatched() == [("b", 0, 1)]
    s.ok("b")


def _when_false_skips_and_cascades(s: Sim) -> None:
    s.ok("a", result=1)
    assert [d.kind for d in s.last_decisions if isinstance(d, TaskSkipped)] == [
        "task_skipped",
        "task_skipped",
    ]


def _trigger_all_done_runs_after_skip(s: Sim) -> None:
    s.ok("a", result=1)
    assert s.dispatched() == [("c", 0, 1)]
    s.ok("c")


def _fanout_parallelism(s: Sim) -> None:
    assert s.dispatched() == [("m", 0, 1), ("m", 1, 1)]  # capped at 2
    s.ok("m", 1, result="B")
    assert s.dispatched() == [("m", 2, 1)]
    s.fail("m", 0)
    assert s.dispatched() == [("m", 3, 1)]  # slot freed by the failure goes to the next item
    s.ok("m", 2, result="C")
    s.ok("m", 3, result="D")
    s.fire("m", 0, attempt=2)
    assert s.dispatched() == [("m", 0, 2)]
    s.ok("m", 0, attempt=2, result="A")
    assert s.state.nodes["fanin"].status == "running"
    s.ok("fanin")


def _fanout_from_upstream(s: Sim) -> None:
    s.ok("src", result=[10, 20, 30])
    assert next(d for d in s.last_decisions if isinstance(d, TaskExpanded)).count == 3
    for i in range(3):
        s.ok("each", i, result=i)


def _fanout_not_a_list(s: Sim) -> None:
    s.ok("src", result={"not": "a list"})


def _fanout_empty(s: Sim) -> None:
    s.ok("src", result=[])
    s.ok("after")


def _cancel(s: Sim) -> None:
    s.cancel()


def _run_timeout(s: Sim) -> None:
    s.ok("a")
    s.time_out()


CASES = {
    "chain succeeds in order": Case(
        CHAIN, _chain_ok, {"a": "succeeded", "b": "succeeded", "c": "succeeded"}, "succeeded"
    ),
    "diamond joins": Case(DIAMOND, _diamond_parallel, {"d": "running"}, "running"),
    "failure skips dependents and fails the run": Case(
        CHAIN, _fail_skips_dependents, {"a": "failed", "b": "skipped", "c": "skipped"}, "failed"
    ),
    "retry then succeed": Case(
        CHAIN.replace("script: echo\n  - name: b", "script: echo\n    retry: 2\n  - name: b", 1),
        _retry_then_succeed,
        {"a": "succeeded", "c": "succeeded"},
        "succeeded",
    ),
    "retries exhausted": Case(
        CHAIN.replace("script: echo\n  - name: b", "script: echo\n    retry: 1\n  - name: b", 1),
        _retries_exhausted,
        {"a": "failed", "b": "skipped"},
        "failed",
    ),
    "failure kind outside the retry policy": Case(
        CHAIN.replace("script: echo\n  - name: b", "script: echo\n    retry: 3\n  - name: b", 1),
        _failure_kind_not_in_policy,
        {"a": "failed"},
        "failed",
    ),
    "fencing: superseded attempt ignored": Case(
        CHAIN.replace("script: echo\n  - name: b", "script: echo\n    retry: 2\n  - name: b", 1),
        _late_result_of_superseded_attempt,
        {"a": "succeeded", "c": "succeeded"},
        "succeeded",
    ),
    "duplicate delivery has no second effect": Case(
        CHAIN, _duplicate_delivery, {"c": "succeeded"}, "succeeded"
    ),
    "continue on failure": Case(
        """
        name: cof
        tasks:
          - name: a
            script: echo
            continue_on_failure: true
          - name: b
            depends: [a]
            script: echo
        """,
        _continue_on_failure,
        {"a": "failed", "b": "succeeded"},
        "succeeded",
    ),
    "when false skips, and skipping cascades": Case(
        """
        name: w
        tasks:
          - name: a
            script: echo
          - name: b
            depends: [a]
            when: tasks.a.outputs.result > 5
            script: echo
          - name: c
            depends: [b]
            script: echo
        """,
        _when_false_skips_and_cascades,
        {"a": "succeeded", "b": "skipped", "c": "skipped"},
        "succeeded",
    ),
    "trigger all_done runs after a skipped upstream": Case(
        """
        name: w
        tasks:
          - name: a
            script: echo
          - name: b
            depends: [a]
            when: "False"
            script: echo
          - name: c
            depends: [b]
            trigger_rule: all_done
            when: tasks.b.state == 'skipped'
            script: echo
        """,
        _trigger_all_done_runs_after_skip,
        {"b": "skipped", "c": "succeeded"},
        "succeeded",
    ),
    "fan-out respects parallelism, fan-in sees item order": Case(
        """
        name: f
        tasks:
          - name: m
            items: [a, b, c, d]
            parallelism: 2
            retry: 1
            command: [echo, "{{ item }}"]
          - name: fanin
            depends: [m]
            command: [echo, "{{ tasks.m.outputs.result }}"]
        """,
        _fanout_parallelism,
        {"m": "succeeded", "fanin": "succeeded"},
        "succeeded",
    ),
    "fan-out over an upstream list": Case(
        FAN_OUT_FROM_SRC,
        _fanout_from_upstream,
        {"each": "succeeded"},
        "succeeded",
    ),
    "fan-out over a non-list fails the task": Case(
        FAN_OUT_FROM_SRC,
        _fanout_not_a_list,
        {"each": "failed"},
        "failed",
    ),
    "fan-out over an empty list succeeds at once": Case(
        FAN_OUT_FROM_SRC + "  - name: after\n    depends: [each]\n    script: echo\n",
        _fanout_empty,
        {"each": "succeeded", "after": "succeeded"},
        "succeeded",
    ),
    "cancel ends the run": Case(CHAIN, _cancel, {"a": "cancelled", "b": "cancelled"}, "cancelled"),
    "run timeout fails the run": Case(
        CHAIN.replace("tasks:", "timeout: 10s\ntasks:"),
        _run_timeout,
        {"a": "succeeded", "b": "cancelled"},
        "failed",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_core(case: Case) -> None:
    sim = Sim(case.workflow, case.params)
    case.steps(sim)
    statuses = sim.statuses()
    assert {k: statuses[k] for k in case.statuses} == case.statuses
    assert sim.state.status == case.run
    if case.run != "running":
        assert isinstance(sim.log[-1], RunCompleted)
        # Nothing further to decide once the run is over.
        assert sim.send(sim.log[-1]) == []


def test_fan_in_outputs_are_in_item_order_not_completion_order() -> None:
    sim = Sim(
        """
        name: f
        tasks:
          - name: m
            items: [1, 2, 3]
            command: [echo, "{{ item }}"]
            outputs: {sq: sq.txt}
        """
    )
    sim.ok("m", 2, result=3, sq=9)
    sim.ok("m", 0, result=1, sq=1)
    sim.ok("m", 1, result=2, sq=4)
    assert sim.state.nodes["m"].outputs() == {"result": [1, 2, 3], "sq": [1, 4, 9]}


def test_retry_backoff_grows_and_is_capped() -> None:
    sim = Sim(
        """
        name: r
        tasks:
          - name: a
            script: echo
            retry: {limit: 5, backoff: {delay: 1s, factor: 3, max: 5s, jitter: 0}}
        """
    )
    delays = []
    for attempt in range(1, 5):
        sim.fail("a", attempt=attempt)
        [scheduled] = [d for d in sim.last_decisions if isinstance(d, RetryScheduled)]
        delays.append(scheduled.due - sim.now)
        sim.fire("a", attempt=attempt + 1)
    assert delays == [1.0, 3.0, 5.0, 5.0]


def test_jitter_stays_within_bounds_and_is_deterministic() -> None:
    text = """
        name: r
        tasks:
          - name: a
            items: [0, 1, 2, 3, 4, 5, 6, 7]
            script: echo
            retry: {limit: 1, backoff: {delay: 10s, jitter: 0.5}}
        """
    dues = []
    for _ in range(2):
        sim = Sim(text)
        for i in range(8):
            sim.fail("a", i)
        dues.append([d.due - sim.now for d in sim.log if isinstance(d, RetryScheduled)])
    assert dues[0] == dues[1]
    assert all(5.0 <= d <= 15.0 for d in dues[0])
    assert len(set(dues[0])) > 1


def test_when_that_raises_fails_the_task_with_the_reason() -> None:
    sim = Sim(
        """
        name: w
        tasks:
          - name: a
            script: echo
          - name: b
            depends: [a]
            when: tasks.a.outputs.result['missing'] > 1
            script: echo
        """
    )
    sim.ok("a", result={"other": 1})
    assert sim.state.nodes["b"].status == "failed"
    assert "when:" in (sim.state.nodes["b"].error or "")


def test_only_the_edges_of_the_finished_task_are_evaluated() -> None:
    # 200 independent roots and one child of the first: finishing a root puts only its own
    # children on the decision queue, never the other roots' subtrees.
    tasks = "\n".join(f"  - name: r{i}\n    script: echo" for i in range(200))
    sim = Sim(
        f"name: wide\ntasks:\n{tasks}\n  - name: child\n    depends: [r0]\n    script: echo\n"
    )
    sim.ok("r5")
    assert not sim.state.evaluable
    from contracts.events import TaskSucceeded
    from engine.state import fold

    fold(sim.state, TaskSucceeded(run_id=sim.run_id, at=sim.now, task="r0"))
    assert list(sim.state.evaluable) == ["child"]


def test_retrying_a_failed_run_reruns_failed_and_downstream_and_keeps_successes() -> None:
    from contracts.events import RunRetryRequested

    sim = Sim(
        """
        name: r
        tasks:
          - name: a
            script: echo
          - name: m
            depends: [a]
            items: [1, 2, 3]
            script: echo
          - name: z
            depends: [m]
            script: echo
        """
    )
    sim.ok("a", result="A")
    sim.ok("m", 0, result=10)
    sim.fail("m", 1, retryable=False)
    sim.ok("m", 2, result=30)
    assert sim.state.status == "failed" and sim.statuses()["z"] == "skipped"

    sim.send(RunRetryRequested(run_id=sim.run_id, at=sim.now, round=1))
    assert sim.state.status == "running"
    # Only the failed item runs again, as attempt 2; 'a' and the good items are kept.
    assert sim.dispatched() == [("m", 1, 2)]
    sim.ok("m", 1, attempt=2, result=20)
    assert sim.dispatched() == [("z", 0, 1)]
    sim.ok("z")
    assert sim.state.status == "succeeded"
    assert sim.state.nodes["m"].outputs()["result"] == [10, 20, 30]
    assert sim.state.nodes["a"].instances[0].attempt == 1
    from engine.state import replay

    assert replay(sim.log, strict=True).status == "succeeded"
    # A second retry of a succeeded run changes nothing.
    assert sim.send(RunRetryRequested(run_id=sim.run_id, at=sim.now, round=2)) == []
    assert sim.state.status == "succeeded"


def test_a_huge_fan_out_is_dispatched_in_windows() -> None:
    n = DISPATCH_WINDOW + 904
    s = Sim(
        f"""
        name: huge
        tasks:
          - name: m
            items: "range({n})"
            command: [echo, "{{{{ item }}}}"]
        """
    )
    assert len(s.dispatched()) == DISPATCH_WINDOW
    half = DISPATCH_WINDOW // 2
    for i in range(half - 1):
        s.ok("m", i)
        assert s.last_decisions == []  # topped up only once half the window has drained
    s.ok("m", half - 1)
    assert s.dispatched() == [("m", i, 1) for i in range(DISPATCH_WINDOW, n)]
    for i in range(half, n):
        s.ok("m", i)
    assert s.state.status == "succeeded"
