"""Tests of the scoring workflow: in-process, no servers, no real waiting."""

from __future__ import annotations

import pytest
from scoring import Record, Report, report, score, scoring

from conveyor.testing import FakeClock, run_workflow


def test_tasks_are_plain_functions() -> None:
    assert score(Record(id=1, value=21)) == 42
    assert report([Record(id=0, value=1)], [2]) == {
        "items": 1,
        "total": 2,
        "mean": 2.0,
        "best_id": 0,
    }


def test_the_workflow_scores_every_record_and_reports() -> None:
    result = run_workflow(scoring, {"size": 5})
    assert result.succeeded
    assert result.task("score").result == [6, 88, 170, 50, 132]
    assert Report(**result.task("report").result).best_id == 2
    assert result.task("alert").state == "skipped"  # the mean is high


def test_flaky_scoring_is_retried_with_backoff_without_waiting() -> None:
    clock = FakeClock()
    result = run_workflow(scoring, {"size": 3}, failures={"score": 2}, clock=clock)
    assert result.succeeded
    assert result.attempts_of("score", index=1) == ["failed", "failed", "succeeded"]
    assert result.task("score").retries == 6
    # Backoff 200ms then 400ms (+-10% jitter) passed on the fake clock only.
    assert 0.5 < clock.now - 1_700_000_000.0 < 0.7


def test_a_low_mean_raises_the_alert_with_a_faked_scorer() -> None:
    result = run_workflow(scoring, {"size": 4}, fakes={"score": 1})
    assert result.task("report").result["mean"] == 1.0
    assert result.task("alert").result == "mean score 1.0 is below 20.0"


def test_a_scorer_that_keeps_failing_fails_the_run() -> None:
    result = run_workflow(
        scoring, {"size": 2}, failures={"score": lambda index, attempt: index == 1}
    )
    assert result.status == "failed"
    assert result.task("score").state == "failed"
    assert result.task("report").state == "skipped"
    assert len(result.events_of("retry_scheduled", "score")) == 3


@pytest.mark.parametrize("size", [0, 1])
def test_edge_sizes(size: int) -> None:
    result = run_workflow(scoring, {"size": size})
    assert result.succeeded
    assert result.task("report").result["items"] == size
