"""A typed Python workflow: make a batch, score each record in parallel, report.

conveyor run scoring:scoring -p size=20      (from the examples directory)
conveyor export scoring:scoring              (the same workflow as YAML)
"""

from __future__ import annotations

import statistics

from pydantic import BaseModel

from conveyor import task, workflow


class Record(BaseModel):
    id: int
    value: int


class Report(BaseModel):
    items: int
    total: int
    mean: float
    best_id: int | None


@task
def make_batch(size: int, seed: int) -> list[Record]:
    return [Record(id=i, value=(i * 7919 + seed) % 101) for i in range(size)]


@task(retry={"limit": 3, "backoff": {"delay": "200ms"}}, timeout="30s", parallelism=4)
def score(record: Record) -> int:
    return record.value * 2


@task
def report(records: list[Record], scores: list[int]) -> Report:
    best = max(range(len(scores)), key=scores.__getitem__) if scores else None
    return Report(
        items=len(scores),
        total=sum(scores),
        mean=round(statistics.fmean(scores), 2) if scores else 0.0,
        best_id=records[best].id if best is not None else None,
    )


@task
def alert(report: Report, threshold: float) -> str:
    return f"mean score {report.mean} is below {threshold}"


@workflow
def scoring(size: int = 8, seed: int = 3, alert_below: float = 20.0) -> None:
    """Score a batch of records in parallel and report on them."""
    batch = make_batch(size, seed)
    scores = score.map(batch)
    summary = report(batch, scores)
    alert.with_options(when="tasks.report.outputs.result['mean'] < params.alert_below")(
        summary, alert_below
    )
