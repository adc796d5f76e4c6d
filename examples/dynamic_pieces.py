"""Dynamic fan-out and fan-in, ported from Dagster's docs snippets (``DynamicOut``).

``load_pieces`` decides at run time what to process; ``compute_piece`` runs once per
piece; ``merge_and_analyze`` collects the results in order. ``sum_fan_in`` is the
static fan-in: a list of outputs passed as one argument.

    conveyor run dynamic_pieces:process_pieces
    conveyor run dynamic_pieces:fan_in

What changed from the Dagster version: ``@op`` is ``@task`` and ``@job`` is
``@workflow``; a dynamic output is a task returning a list, ``.map`` fans out over it
and the task that takes the mapped result is the collect.
"""

from __future__ import annotations

import structlog

from conveyor import task, workflow

log = structlog.get_logger("dynamic_pieces")


@task
def load_pieces(first: str, last: str) -> list[str]:
    pieces = [chr(i) for i in range(ord(first), ord(last) + 1)]
    log.info("will process", pieces=pieces)
    return pieces


@task
def compute_piece(piece_to_compute: str) -> str:
    return piece_to_compute.upper()


@task
def merge_and_analyze(computed_pieces: list[str]) -> str:
    log.info("finished processing", result=computed_pieces)
    return "".join(computed_pieces)


@workflow
def process_pieces(first: str = "a", last: str = "z") -> None:
    """One task per letter, decided at run time, then the letters merged in order."""
    pieces = load_pieces(first, last)
    merge_and_analyze(compute_piece.map(pieces))


@task
def return_one() -> int:
    return 1


@task
def sum_fan_in(nums: list[int]) -> int:
    return sum(nums)


@workflow
def fan_in() -> None:
    """Ten tasks, their outputs passed to one as a list."""
    fan_outs = [return_one.with_options(name=f"return_one_{i}")() for i in range(10)]
    sum_fan_in(fan_outs)
