"""Waiting until a coordinator shard has handled everything sent to it so far."""

from __future__ import annotations

import asyncio
import uuid

from contracts.topology import shard_of
from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine


async def shard_drained(engine: EmbeddedEngine, run_id: str) -> None:
    """Return once the shard of ``run_id`` has handled every message sent to it before
    this call: a later run of the same shard completing proves it (a shard's messages
    are handled in order)."""
    shards = (await engine.client.shard_map()).count
    key = next(
        k
        for k in (f"drain-{i}" for i in range(1000))
        if shard_of(uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:{k}").hex, shards)
        == shard_of(run_id, shards)
    )
    after = parse_workflow("name: after\ntasks:\n  - name: a\n    script: echo 2\n")
    drain_id = await engine.submit(after, {}, idempotency_key=key)
    await asyncio.wait_for(engine.coordinator.wait(drain_id), 20)
