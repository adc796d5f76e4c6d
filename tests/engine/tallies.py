"""A node's tally as the fold keeps it, beside a read of its instances written apart
from ``Tally.of``: the two must agree whenever a view of the run may ask."""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine.state.model import Instance, Node


def kept(node: Node) -> tuple[Any, ...]:
    """Counts per status, first start, last finish, finished count and retries, from
    the tally the fold keeps (read once if the node has none)."""
    tally = node.tally()
    return (
        node.status_counts(),
        tally.first_start,
        tally.last_finish,
        tally.finished,
        tally.retries,
    )


def read_whole(instances: list[Instance]) -> tuple[Any, ...]:
    """The same, read from every instance."""
    starts = [inst.started_at for inst in instances if inst.started_at is not None]
    ends = [inst.finished_at for inst in instances if inst.finished_at is not None]
    return (
        dict(Counter(inst.status for inst in instances)),
        min(starts, default=None),
        max(ends, default=None),
        len(ends),
        sum(max(0, inst.attempt - 1) for inst in instances),
    )
