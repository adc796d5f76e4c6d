"""Reading the items of a stored JSON Lines list forward, a chunk at a time.

Called by the effects before they render the dispatches of a fan-out whose items are
stored (``engine.state.items``). Reading starts at the nearest remembered line at or
before the first item wanted and stops after the last one, so dispatching a whole
fan-out window by window reads the file about once. Items are JSON: data, never code.
"""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.errors import ConveyorError
from contracts.ports import ArtifactStore
from contracts.values import VALUES_FOLDER
from engine.state.items import CHECKPOINT_EVERY, StreamedItems

CHUNK = 1 << 20


async def load_items(items: StreamedItems, indices: list[int], store: ArtifactStore | None) -> None:
    """Have ``items`` hold each of ``indices``; raises ConveyorError (not retryable)
    if they cannot be read."""
    wanted = items.missing(indices)
    if not wanted:
        return
    if store is None:
        raise ConveyorError("items stored as jsonl need an artifact store", retryable=False)
    if f"/{VALUES_FOLDER}/" not in items.uri or "/../" in items.uri:
        raise ConveyorError(f"items are not stored by a worker: {items.uri}", retryable=False)
    line = max(k for k in items.checkpoints if k <= wanted[0])
    offset = items.checkpoints[line]
    want, last, found = set(wanted), wanted[-1], {}
    rest = b""
    while line <= last:
        chunk = await store.read_range(items.uri, offset + len(rest), CHUNK)
        if not chunk:
            raise ConveyorError(
                f"{items.uri} ends after {line:,} items; its reference says {items.count:,}",
                retryable=False,
            )
        *lines, rest = (rest + chunk).split(b"\n")
        for text in lines:
            if line % CHECKPOINT_EVERY == 0:
                items.checkpoints[line] = offset
            if line in want:
                found[line] = _decode(text, line, items.uri)
            offset += len(text) + 1
            line += 1
            if line > last:
                break
    items.keep(found)


def _decode(text: bytes, line: int, uri: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ConveyorError(f"{uri}: item {line} is not JSON: {exc}", retryable=False) from exc
