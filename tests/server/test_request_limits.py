"""The API and the UI read at most ``max_request_bytes`` of a body: past it a 413, before
anything starts, however the body comes (with its length declared or in chunks)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from conveyor.server.app import create_app
from tests.server.conftest import Server
from tests.server.test_api import FANOUT, until_waiting

LIMIT = 2000


@pytest.fixture
async def limited(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    await server.register(FANOUT)
    transport = httpx.ASGITransport(app=create_app(server.runtime, max_request_bytes=LIMIT))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def submission(size: int) -> bytes:
    """A submission of ``fan`` whose JSON is ``size`` bytes (padded with spaces)."""
    body = json.dumps({"workflow": "fan", "params": {"n": 1}}).encode()
    return body + b" " * (size - len(body))


async def in_chunks(body: bytes, size: int = 500) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def refused(answer: httpx.Response, said: str) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["title"] == "payload too large"
    assert problem["detail"] == f"body over the limit: {said} (at most 2,000)"


async def test_a_submission_over_the_limit_starts_nothing(
    server: Server, limited: httpx.AsyncClient
) -> None:
    declared = await limited.post("/api/v1/runs", content=submission(LIMIT + 1))
    refused(declared, "2,001 bytes")
    chunked = await limited.post("/api/v1/runs", content=in_chunks(submission(LIMIT * 3)))
    assert "content-length" not in chunked.request.headers
    refused(chunked, "a longer body")
    assert (await limited.get("/api/v1/runs")).json()["items"] == []
    # At the limit, the same submission starts its run.
    accepted = await limited.post("/api/v1/runs", content=in_chunks(submission(LIMIT)))
    assert accepted.status_code == 202, accepted.text
    await until_waiting(server, accepted.json()["run_id"])
    assert len((await limited.get("/api/v1/runs")).json()["items"]) == 1


async def test_signal_data_over_the_limit_is_not_delivered(
    server: Server, limited: httpx.AsyncClient
) -> None:
    run_id = (await limited.post("/api/v1/runs", json={"workflow": "fan"})).json()["run_id"]
    await until_waiting(server, run_id)
    data = json.dumps({"note": "x" * LIMIT}).encode()
    answer = await limited.post(f"/api/v1/runs/{run_id}/signals/gate", content=data)
    refused(answer, f"{len(data):,} bytes")
    assert (await limited.get(f"/api/v1/runs/{run_id}")).json()["state"] == "running"
    small = await limited.post(f"/api/v1/runs/{run_id}/signals/gate", json={"note": "ok"})
    assert small.status_code == 202, small.text
    state = await server.engine.client.watch(run_id, timeout=10)
    assert state.nodes["gate"].outputs()["result"] == {"note": "ok"}


async def test_the_login_form_is_held_to_the_limit_too(limited: httpx.AsyncClient) -> None:
    # FastAPI reads a form before the route runs, and would call any error it met
    # there a 400: the limit still answers for itself.
    form = await limited.post("/login", data={"token": "t" * LIMIT})
    refused(form, f"{len('token=') + LIMIT:,} bytes")


async def test_webhooks_keep_their_own_limit(limited: httpx.AsyncClient) -> None:
    body = b"x" * (LIMIT * 2)  # over the API's limit, under the open hook's 1 MiB
    answer = await limited.post("/hooks/hooked/open?repo=acme", content=body)
    assert answer.status_code == 202, answer.text


async def test_a_stream_is_not_cut_by_the_body_its_request_declares(
    server: Server, limited: httpx.AsyncClient
) -> None:
    # A stream reads its request only to learn that the client went away.
    run_id = (await limited.post("/api/v1/runs", json={"workflow": "fan"})).json()["run_id"]
    await until_waiting(server, run_id)
    await limited.post(f"/api/v1/runs/{run_id}/tasks/gate/approve")
    url = f"/api/v1/runs/{run_id}/events/stream"
    async with limited.stream("GET", url, content=b"x" * (LIMIT * 2)) as stream:
        assert stream.status_code == 200
        kinds = [line async for line in stream.aiter_lines() if line.startswith("event: ")]
    assert kinds[-1] == "event: run_completed"
