"""A queue source on a real RabbitMQ that is not there when the server starts."""

from __future__ import annotations

import asyncio
import html
import json
import os
import time

import aio_pika
import httpx
import pytest

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.server.app import create_app
from conveyor.server.runtime import TriggerRuntime
from engine.triggers.stores.memory import MemoryTriggerStore
from tests.amqp import amqp_channel
from tests.integration.test_triggers_live import ORDERS
from tests.services import free_port


async def test_a_queue_source_whose_broker_was_away_at_start_consumes_once_it_answers(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried once at start and then never again, a source whose broker was down would
    leave its messages on the queue for good, with one line in the server's log."""
    queue = f"orders.created.{os.getpid()}.{time.monotonic_ns()}"
    away = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens there
    monkeypatch.setenv("TEST_AMQP_URL", away)
    async with EmbeddedEngine(workers=2) as engine:
        store = MemoryTriggerStore()
        runtime = TriggerRuntime(
            store, engine.client, transport=engine.transport, refresh_interval=0.05
        )
        await runtime.registry.register(parse_workflow(ORDERS.replace("QUEUE", queue)))
        await runtime.start()
        try:
            source = ("orders", 1, "created")
            assert source in runtime.queues.not_started
            # Said where people look, not only in the server's log.
            app = httpx.ASGITransport(app=create_app(runtime))
            async with httpx.AsyncClient(transport=app, base_url="http://test") as http:
                (listed,) = (await http.get("/api/v1/workflows")).json()["items"]
                (trigger,) = listed["triggers"]
                assert trigger["problem"].startswith("not consuming: ")
                assert "(trying again)" in trigger["problem"]
                page = (await http.get("/workflows")).text
                assert trigger["problem"] in html.unescape(page)
            async with amqp_channel(amqp_url, publisher_confirms=True) as channel:
                await channel.declare_queue(queue, durable=True)
                await channel.default_exchange.publish(
                    aio_pika.Message(json.dumps({"id": 7}).encode(), message_id="order-7"),
                    routing_key=queue,
                )
                monkeypatch.setenv("TEST_AMQP_URL", amqp_url)  # the broker is back
                async with asyncio.timeout(30):
                    while not (records := await store.records("orders")):
                        await asyncio.sleep(0.05)
                assert runtime.queues.not_started == {}
                async with httpx.AsyncClient(transport=app, base_url="http://test") as http:
                    (listed,) = (await http.get("/api/v1/workflows")).json()["items"]
                    assert listed["triggers"][0]["problem"] is None
                (record,) = records
                assert record.decision == "accepted" and record.run_id is not None
                state = await engine.client.watch(record.run_id, timeout=20)
                assert (state.status, state.params) == ("succeeded", {"order": 7})
                await channel.queue_delete(queue)
                await channel.queue_delete(f"{queue}.dead")
        finally:
            await runtime.stop()
