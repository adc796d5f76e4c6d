"""Tasks whose lists are stored as JSON Lines and fanned out over item by item."""

from __future__ import annotations

from collections.abc import Iterator

from conveyor import task, workflow


@task(result_serializer="jsonl")
def orders(count: int) -> Iterator[dict[str, int]]:
    """A generator: the worker writes each order as a line as it is produced."""
    for n in range(count):
        yield {"id": n, "cents": 100 + n}


@task
def with_tax(order: dict[str, int]) -> int:
    return order["cents"] * 2


@task
def total(amounts: list[int]) -> int:
    return sum(amounts)


@task
def count_all(everything: list[dict[str, int]]) -> int:
    return len(everything)


@workflow
def billing(count: int = 5000) -> None:
    listed = orders(count)
    total(with_tax.map(listed))
    count_all(listed)  # the whole list, fetched and decoded by the worker that takes it
