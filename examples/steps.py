"""Python steps used by the example workflows (``python: steps:<function>``)."""

from __future__ import annotations

import statistics


def make_batch(size: int, seed: int) -> list[dict[str, int]]:
    """The items of the batch: one record per id, with a deterministic value."""
    return [{"id": i, "value": (i * 7919 + seed) % 101} for i in range(size)]


def report(scores: list[int], ids: list[int]) -> dict[str, object]:
    """Fan-in: every item's score, in item order."""
    return {
        "items": len(scores),
        "total": sum(scores),
        "mean": round(statistics.fmean(scores), 2) if scores else 0.0,
        "best_id": ids[scores.index(max(scores))] if scores else None,
    }


def number(n: int) -> int:
    return n


def double(n: int) -> int:
    return 2 * n


def summarize(values: list[int]) -> dict[str, int]:
    """Fan-in: the results of every item, in item order."""
    return {"count": len(values), "total": sum(values)}
