"""Typed Python workflows used by the authoring tests."""

from __future__ import annotations

from conveyor import command, script, task, workflow


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def double(x: int) -> int:
    return x * 2


@task
def shout(text: str) -> str:
    return text.upper()


@task
def add_up(values: list[int]) -> int:
    return sum(values)


@task
async def label(total: int, prefix: str) -> str:
    return f"{prefix}{total}"


@workflow(timeout="10m")
def pipeline(n: int = 4, prefix: str = "total=") -> None:
    doubled = double.map(numbers(n))
    total = add_up(doubled)
    label(total, prefix)
    echoed = script("echo-total", 'echo "$TOTAL"', env={"TOTAL": total})
    command("confirm", ["test", f"{echoed}", "=", f"{total}"])


@workflow(timeout="30m")
def slow_retry(unused: int = 0) -> None:
    """Backoff of an hour, run timeout of half an hour: the timeout wins."""
    script("flaky", "exit 1", retry={"limit": 3, "backoff": {"delay": "1h", "max": "2h"}})


@task
def check_positive(x: int) -> int:
    if x < 0:
        raise ValueError(f"{x} is negative")
    return x


@workflow
def checked(x: int = -1) -> None:
    check_positive(x)
