"""A Python sensor for the tests: asks for one run per number in a shared file, from
its cursor on."""

from __future__ import annotations

import os
from pathlib import Path

from conveyor import RunRequest, SensorResult, task, triggers, workflow

CALLS: list[str | None] = []


def new_numbers(cursor: str | None) -> SensorResult:
    CALLS.append(cursor)
    numbers = [int(n) for n in Path(os.environ["SENSOR_NUMBERS"]).read_text().split()]
    seen = int(cursor or 0)
    fresh = numbers[seen:]
    return SensorResult(
        runs=[RunRequest(key=f"n-{seen + i}", params={"n": n}) for i, n in enumerate(fresh)],
        cursor=str(len(numbers)),
    )


def not_a_result(cursor: str | None) -> object:
    return {"runs": []}


@task
def show(n: int) -> int:
    return n


@workflow(name="numbers", triggers=[triggers.sensor("fresh", f"{__name__}:new_numbers")])
def numbers_flow(n: int) -> None:
    show(n=n)
