"""The worker's outbox: what a sender hands over goes out, whatever becomes of the sender."""

from __future__ import annotations

import asyncio
from typing import cast

from contracts.codec import decode_coordinator_input
from contracts.events import TaskSucceeded
from contracts.ports import Transport
from workers.outbox import EventOutbox


class HeldBroker:
    """Publishes once let go, as a broker whose confirms are slow."""

    def __init__(self) -> None:
        self.published: list[bytes] = []
        self.let_go = asyncio.Event()
        self.publishing = asyncio.Event()

    async def publish(self, queue: str, bodies: list[bytes]) -> None:
        self.publishing.set()
        await self.let_go.wait()
        self.published.extend(bodies)


def succeeded(index: int) -> TaskSucceeded:
    return TaskSucceeded(run_id="r", at=1.0, task="t", index=index, result=index)


async def test_a_cancelled_sender_does_not_take_its_events_back() -> None:
    broker = HeldBroker()
    outbox = EventOutbox(cast(Transport, broker))
    first = asyncio.create_task(outbox.send("q", [succeeded(0)]))
    await broker.publishing.wait()  # the first publish waits for its confirm
    # Queued behind it, then cancelled while waiting: the event is handed over already.
    second = asyncio.create_task(outbox.send("q", [succeeded(1)]))
    await asyncio.sleep(0)
    second.cancel()
    broker.let_go.set()
    await first
    await outbox.drain()
    assert second.cancelled()
    sent = [event for body in broker.published for event in decode_coordinator_input(body)]
    assert [event.index for event in sent if isinstance(event, TaskSucceeded)] == [0, 1]


async def test_a_failed_publish_fails_each_sender_waiting_for_it() -> None:
    class Refusing:
        async def publish(self, queue: str, bodies: list[bytes]) -> None:
            raise ConnectionError("broker away")

    outbox = EventOutbox(cast(Transport, Refusing()))
    results = await asyncio.gather(
        outbox.send("q", [succeeded(0)]), outbox.send("q", [succeeded(1)]), return_exceptions=True
    )
    assert [type(result) for result in results] == [ConnectionError, ConnectionError]
