"""A fan-out's items stored as JSON Lines: counted, never held whole.

When a fan-out's ``items`` name a step result stored as ``jsonl`` (its reference says
how many lines it has), the run state keeps the reference and the count, and only the
items of instances about to be dispatched: the effects (``engine.itemstream``) read
them from the artifact store, forward, shortly before rendering. So a fan-out over a
million stored items costs the coordinator the window in flight, not the list.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from contracts.errors import ExpressionError
from contracts.values import STORED_KEY, streamed_count

KEPT = 16_384
"""Items kept loaded (the dispatch window with room for retries); older ones are read
again if an instance needs them once more."""
CHECKPOINT_EVERY = 1024
"""Every this many lines the byte offset is remembered, so reading can resume near any
item instead of at the start."""


class StreamedItems:
    __slots__ = ("_loaded", "checkpoints", "count", "reference")

    def __init__(self, reference: dict[str, Any], count: int) -> None:
        self.reference = reference
        self.count = count
        self.checkpoints: dict[int, int] = {0: 0}
        """Line number -> byte offset, for every ``CHECKPOINT_EVERY``-th line read."""
        self._loaded: OrderedDict[int, Any] = OrderedDict()

    @classmethod
    def of(cls, value: Any) -> StreamedItems | None:
        """The items a stored JSON Lines value holds; None for any other value."""
        count = streamed_count(value)
        return cls(dict(value[STORED_KEY]), count) if count is not None else None

    @property
    def uri(self) -> str:
        return str(self.reference.get("uri", ""))

    def stored(self) -> dict[str, Any]:
        """The reference as it appears in a result (what a snapshot keeps)."""
        return {STORED_KEY: self.reference}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Any:
        try:
            return self._loaded[index]
        except KeyError:
            raise ExpressionError(f"stored item {index} was not read before use") from None

    def missing(self, indices: Iterable[int]) -> list[int]:
        return sorted({i for i in indices if i not in self._loaded})

    def keep(self, loaded: dict[int, Any]) -> None:
        for index, item in loaded.items():
            self._loaded[index] = item
            self._loaded.move_to_end(index)
        while len(self._loaded) > KEPT:
            self._loaded.popitem(last=False)
