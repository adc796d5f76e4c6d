"""A typed Python workflow with an http step, for the tests."""

from __future__ import annotations

from conveyor import http, task, workflow


@task
def double(n: int) -> int:
    return n * 2


@workflow
def ask_service(base: str, n: int = 2) -> None:
    doubled = double(n)
    http("ask", f"{base}/echo?m={doubled}", method="POST", body={"m": doubled})
