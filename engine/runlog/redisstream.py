"""A run's events in its Redis stream ``cv:{R}:events``: one entry per append, whose
fields "1", "2", ... hold that append's events in order, and whose id ``0-E`` counts
the events up to its last."""

from __future__ import annotations

from typing import Any

from contracts.codec import decode_event
from contracts.events import Event


def events_of(entries: list[tuple[Any, dict[bytes, bytes]]], after: int = 0) -> list[Event]:
    """A stream entry holds the events of one append, in order; skip those before ``after``.

    Entry ``0-E`` holds the events at positions ``E - len(fields)`` up to ``E``.
    """
    events: list[Event] = []
    for entry_id, fields in entries:
        end = position(entry_id)
        bodies = list(fields.values())
        skip = max(0, after - (end - len(bodies)))
        events.extend(decode_event(body) for body in bodies[skip:])
    return events


def position(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])
