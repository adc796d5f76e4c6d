"""The events a coordinator appended and folded itself, remembered boundedly.

A message whose ack was lost (its channel went down with a broker node) is delivered
again. If its event is one this process appended and folded into the state it holds,
there is nothing to do; without this memory the run would be rebuilt from its log for
every such redelivery, and every task it had dispatched sent again, which after a
broker node is lost feeds on itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from contracts.events import Event

KEPT = 65_536
"""Event ids remembered (some megabytes): more than a dispatch window of redeliveries."""


class AppendedEvents:
    def __init__(self, kept: int = KEPT) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._kept = kept

    def note(self, events: Iterable[Event]) -> None:
        ids = self._ids
        for event in events:
            ids[event.id] = None
        while len(ids) > self._kept:
            ids.popitem(last=False)

    def fresh(self, events: list[Event]) -> list[Event]:
        """The events not known to be in the log and in this process's state already."""
        return [event for event in events if event.id not in self._ids]
