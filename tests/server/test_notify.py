"""Runs talk back: state changes reach a real HTTP receiver as signed CloudEvents,
retried after failures; a permanent refusal is not retried; each outcome is recorded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contracts.spec import Workflow
from contracts.vocabulary import RunStatus
from engine.triggers.signatures import Preset, verify
from tests.server.conftest import SECRET, Server
from tests.services import free_port


@dataclass
class Receiver:
    url: str
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    failures_left: int = 2
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    found = Receiver(f"http://127.0.0.1:{port}")

    async def hook(request: Request) -> Response:
        path = request.url.path
        found.got.append((path, dict(request.headers), await request.body()))
        found.arrived.set()
        if path == "/gone":
            return Response(status_code=404)
        if path == "/flaky" and found.failures_left > 0:
            found.failures_left -= 1
            return Response(status_code=503)
        return Response(status_code=204)

    app = Starlette(routes=[Route("/{name}", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield found
    server.should_exit = True
    await task


def notifying(url: str) -> str:
    return f"""
name: told
params: {{fail: {{type: bool, default: false}}}}
tasks:
  - name: a
    env: {{FAIL: "{{{{ params.fail }}}}"}}
    script: 'test "$FAIL" != true && test "$FAIL" != True'
notify:
  - url: {url}/flaky
    secret_env: TEST_HOOK_SECRET
    headers: {{x-team: data}}
  - url: {url}/gone
    on: [failed]
    attempts: 4
triggers:
  - name: go
    webhook: {{preset: none, params: {{fail: "'fail' in query"}}}}
"""


async def records_of(server: Server, count: int) -> list[object]:
    for _ in range(500):
        found = await server.runtime.store.records("told", "notify")
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {len(found)} notifications recorded")


async def test_a_finished_run_is_delivered_signed_after_retries(
    server: Server, receiver: Receiver
) -> None:
    await server.register(notifying(receiver.url))
    answer = await server.http.post("/hooks/told/go")
    await server.settled()
    state = await server.engine.client.watch(answer.json()["run_id"], timeout=10)
    assert state.status == RunStatus.SUCCEEDED
    [record] = await records_of(server, 1)
    assert record.decision == "delivered"  # type: ignore[attr-defined]
    assert "(3 attempts)" in record.reason  # type: ignore[attr-defined]
    flaky = [(headers, body) for path, headers, body in receiver.got if path == "/flaky"]
    assert len(flaky) == 3
    headers, body = flaky[-1]
    assert headers["content-type"] == "application/cloudevents+json"
    assert headers["x-team"] == "data"
    assert verify(
        Preset.STANDARD, SECRET.encode(), headers, body, now=float(headers["webhook-timestamp"])
    ).ok
    event = json.loads(body)
    assert event["specversion"] == "1.0"
    assert event["type"] == "dev.conveyor.run.succeeded"
    assert event["data"] == {
        "run_id": state.run_id,
        "workflow": "told",
        "state": "succeeded",
        "reason": "",
    }
    assert not [path for path, _, _ in receiver.got if path == "/gone"]  # not asked for


async def test_a_permanent_refusal_is_recorded_without_retrying(
    server: Server, receiver: Receiver
) -> None:
    await server.register(notifying(receiver.url))
    receiver.failures_left = 0
    answer = await server.http.post("/hooks/told/go?fail=1")
    await server.settled()
    state = await server.engine.client.watch(answer.json()["run_id"], timeout=10)
    assert state.status == RunStatus.FAILED
    found = await records_of(server, 2)
    records = {("gone" if "/gone:" in r.reason else "flaky"): r for r in found}  # type: ignore[attr-defined]
    assert records["gone"].decision == "failed"
    assert "HTTP 404 (1 attempt)" in records["gone"].reason
    assert records["flaky"].decision == "delivered"
    assert [path for path, _, _ in receiver.got].count("/gone") == 1


async def test_state_changes_are_announced_with_routing_keys(server: Server) -> None:
    await server.register(notifying("http://127.0.0.1:9"))
    await server.engine.transport.bind_announcements("watching", "run.told.*")
    consumer = await server.engine.transport.consume("watching", prefetch=10)
    answer = await server.http.post("/hooks/told/go")
    await server.settled()
    await server.engine.client.watch(answer.json()["run_id"], timeout=10)
    seen = []
    for _ in range(2):
        delivery = await asyncio.wait_for(anext(aiter(consumer)), 5)
        seen.append((delivery.headers["routing_key"], json.loads(delivery.body)["type"]))
        await delivery.ack()
    assert seen == [
        ("run.told.running", "dev.conveyor.run.running"),
        ("run.told.succeeded", "dev.conveyor.run.succeeded"),
    ]


async def test_a_run_is_read_once_however_many_changes_it_announces(
    server: Server, receiver: Receiver
) -> None:
    # A run's notify entries come from its submission, read once: not from its state,
    # which costs in proportion to the run's size, and not again at each change.
    await server.register(notifying(receiver.url))
    assert server.runtime.notifier is not None
    client = server.runtime.notifier._client
    reads: list[str] = []

    class CountingClient:  # no state(): reading one would fail the handling
        async def workflow(self, run_id: str) -> Workflow:
            reads.append(run_id)
            return await client.workflow(run_id)

    server.runtime.notifier._client = CountingClient()  # type: ignore[assignment]
    receiver.failures_left = 0
    await server.engine.transport.bind_announcements("watching", "run.told.*")
    watching = await server.engine.transport.consume("watching", prefetch=100)
    runs = []
    for _ in range(2):
        answer = await server.http.post("/hooks/told/go")
        await server.settled()
        runs.append(answer.json()["run_id"])
        await server.engine.client.watch(runs[-1], timeout=10)
    await records_of(server, 2)  # the last change of each run has been handled
    changes = []
    while ready := watching.ready(100):
        changes += [json.loads(d.body)["data"]["run_id"] for d in ready]
    assert sorted(changes) == sorted(runs * 2)  # running, then succeeded
    assert reads == runs
