"""Swapping claim checks ({"$claim": ref}) back for the values they stand for."""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.events import ArtifactRef, Event, TaskSucceeded
from contracts.ports import ArtifactStore
from contracts.vocabulary import CLAIM_KEY


def is_claim(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and CLAIM_KEY in value


async def hydrate(event: Event, store: ArtifactStore | None) -> Event:
    """The event with its claimed values fetched; the log keeps the original."""
    if store is None or not isinstance(event, TaskSucceeded):
        return event
    claimed = [v for v in (event.result, *event.outputs.values()) if is_claim(v)]
    if not claimed:
        return event

    async def value(v: Any) -> Any:
        if not is_claim(v):
            return v
        ref = msgspec.convert(v[CLAIM_KEY], ArtifactRef)
        return msgspec.json.decode(await store.get_bytes(ref))

    outputs = {name: await value(v) for name, v in event.outputs.items()}
    return msgspec.structs.replace(event, result=await value(event.result), outputs=outputs)
