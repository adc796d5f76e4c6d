"""``conveyor.testing`` tells which ``notify:`` deliveries a run calls for, without
sending any."""

from __future__ import annotations

from contracts.validation import parse_workflow
from conveyor.testing import run_workflow

TOLD = parse_workflow(
    """
name: told
tasks:
  - name: a
    command: [echo, hi]
notify:
  - url: https://hooks.example.com/failures
    on: [failed]
  - url: https://hooks.example.com/everything
    on: [running, succeeded, failed, cancelled]
"""
)


def test_a_failed_run_calls_for_the_failure_webhooks() -> None:
    result = run_workflow(TOLD, failures={"a": 1})
    assert result.status == "failed"
    told = [(n.url, n.state) for n in result.notifications]
    assert told == [
        ("https://hooks.example.com/everything", "running"),
        ("https://hooks.example.com/failures", "failed"),
        ("https://hooks.example.com/everything", "failed"),
    ]
    change = result.notifications[-1].change
    assert change["type"] == "dev.conveyor.run.failed"
    assert change["id"] == f"{result.run_id}/run_completed/0"
    assert change["data"]["reason"] == result.reason


def test_a_succeeded_run_calls_only_for_the_entries_that_ask_for_success() -> None:
    result = run_workflow(TOLD)
    assert result.succeeded
    assert [n.state for n in result.notifications] == ["running", "succeeded"]
    assert {n.url for n in result.notifications} == {"https://hooks.example.com/everything"}
