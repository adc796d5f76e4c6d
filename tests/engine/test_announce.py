"""The announcer publishes state changes in order and keeps pace with a busy engine."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import msgspec

from contracts.events import RunSubmitted
from engine.announce import Announcer
from engine.state.model import RunState
from engine.transport.memory import MemoryTransport

CHANGES = 300


def _state(run_id: str) -> RunState:
    return cast(RunState, SimpleNamespace(run_id=run_id, workflow=SimpleNamespace(name="w")))


async def test_announcements_do_not_wait_a_loop_turn_each_while_the_engine_is_busy() -> None:
    """An embedded server taking webhooks keeps its loop full. Were each announcement to
    need turns of that loop of its own, they would fall behind the runs by thousands and
    reach outbound webhooks seconds late; the queued ones go out in a turn or two."""
    transport = MemoryTransport()
    await transport.bind_announcements("changes", "run.#")
    announcer = Announcer(transport)
    for n in range(CHANGES):
        run_id = f"run-{n}"
        announcer(
            RunSubmitted(run_id=run_id, at=0.0, workflow={"name": "w"}, params={}), _state(run_id)
        )

    turns = 0
    async with asyncio.timeout(10):
        while await transport.queue_depth("changes") != CHANGES:
            turns += 1  # the engine's other work: one callback per turn of the loop
            await asyncio.sleep(0)
    assert turns <= 3, f"{CHANGES} announcements took {turns} turns of the loop"

    consumer = await transport.consume("changes", prefetch=CHANGES)
    delivered = consumer.ready(CHANGES)
    assert [msgspec.json.decode(d.body)["subject"] for d in delivered] == [
        f"run-{n}" for n in range(CHANGES)
    ]
    await announcer.drain()
