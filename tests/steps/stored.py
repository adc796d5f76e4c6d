"""Tasks whose results JSON cannot carry, stored in the artifact store, for the tests."""

from __future__ import annotations

from typing import Any

import pandas as pd

from conveyor import task, workflow


class Ledger:
    """An ordinary object: no schema, so it can only travel pickled."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.entries: list[int] = []

    def add(self, amount: int) -> Ledger:
        self.entries.append(amount)
        return self


@task(result_serializer="pickle")
def open_ledger(owner: str, amounts: list[int]) -> Ledger:
    ledger = Ledger(owner)
    for amount in amounts:
        ledger.add(amount)
    return ledger


@task
def balance(ledger: Ledger) -> str:
    assert isinstance(ledger, Ledger)
    return f"{ledger.owner}: {sum(ledger.entries)}"


@task(result_serializer="pickle")
def ledger_of(n: int) -> Ledger:
    return Ledger(f"owner-{n}").add(n).add(n * 10)


@task
def grand_total(ledgers: list[Ledger]) -> int:
    return sum(sum(ledger.entries) for ledger in ledgers)


@task(result_serializer="pickle", timeout=60)
def ledger_in_child(owner: str) -> Ledger:
    return Ledger(owner).add(7)


@task(timeout=60)
def balance_in_child(ledger: Ledger) -> str:
    return f"{ledger.owner}: {sum(ledger.entries)} ({type(ledger).__name__})"


@task(result_serializer="parquet")
def frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(rows), "square": [i * i for i in range(rows)]})


@task
def column_total(df: pd.DataFrame, column: str) -> int:
    assert isinstance(df, pd.DataFrame)
    return int(df[column].sum())


@task
def take(value: Any) -> str:
    return f"{type(value).__name__}: {value!r}"


@workflow
def ledgers(owner: str = "ada") -> None:
    balance(open_ledger(owner, [3, 4, 5]))
    grand_total(ledger_of.map([1, 2, 3]))
    balance_in_child(ledger_in_child(owner))
    column_total(frame(5), "square")


@workflow
def forged(value: Any = None) -> None:
    take(value)
    take.with_options(name="take_in_child", timeout=60)(value)
