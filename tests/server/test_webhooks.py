"""Webhooks: signed deliveries start one run each; nothing forged, stale or oversized
starts anything; every decision is recorded."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from contracts.validation import parse_workflow
from contracts.vocabulary import RunStatus
from conveyor.embedded import EmbeddedEngine
from conveyor.server.app import create_app
from conveyor.server.runtime import TriggerRuntime
from engine.triggers.stores.redis import RedisTriggerStore
from tests.server.conftest import HOOKED, SECRET, Server, github_signature
from tests.services import LocalRedis

PUSH = json.dumps({"repository": {"full_name": "acme/app"}, "after": "abc123"}).encode()


def github_headers(body: bytes, delivery: str = "d-1", event: str = "push") -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": github_signature(body),
        "Content-Type": "application/json",
    }


async def runs(server: Server) -> list[str]:
    return [r.run_id for r in await server.engine.client.runs(limit=1000)]


async def test_a_signed_delivery_starts_a_run_with_params_from_the_body(server: Server) -> None:
    answer = await server.http.post(
        "/hooks/hooked/push", content=PUSH, headers=github_headers(PUSH)
    )
    assert answer.status_code == 202
    assert answer.json()["status"] == "accepted"
    run_id = answer.json()["run_id"]
    await server.settled()
    state = await server.engine.client.watch(run_id, timeout=10)
    assert state.status == RunStatus.SUCCEEDED
    assert state.params == {"repo": "acme/app", "sha": "abc123"}
    lines = await server.engine.client.lines(run_id)
    assert [line.text for line in lines if line.stream == "stdout"] == ["building acme/app"]
    events = await server.engine.client.events(run_id)
    assert events[0].trigger == "webhook:push"  # type: ignore[attr-defined]
    assert events[0].workflow_version == 1  # type: ignore[attr-defined]
    [record] = await server.runtime.store.records("hooked", "push")
    assert (record.decision, record.run_id, record.key) == ("accepted", run_id, "d-1")


async def test_a_redelivery_returns_the_same_run_and_starts_nothing(server: Server) -> None:
    first = await server.http.post("/hooks/hooked/push", content=PUSH, headers=github_headers(PUSH))
    again = await server.http.post("/hooks/hooked/push", content=PUSH, headers=github_headers(PUSH))
    await server.settled()
    assert again.status_code == 202
    assert again.json() == {
        "run_id": first.json()["run_id"],
        "delivery": "d-1",
        "status": "duplicate",
    }
    await server.engine.client.watch(first.json()["run_id"], timeout=10)
    assert await runs(server) == [first.json()["run_id"]]
    decisions = [r.decision for r in await server.runtime.store.records("hooked")]
    # (The first is recorded when its run starts, which may be after the second came.)
    assert sorted(decisions) == ["accepted", "duplicate"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "does not match"),
        ({"X-Hub-Signature-256": github_signature(PUSH, "wrong secret")}, "does not match"),
        ({"X-Hub-Signature-256": github_signature(PUSH + b" ")}, "does not match"),
    ],
)
async def test_unsigned_or_forged_deliveries_get_401_and_start_nothing(
    server: Server, headers: dict[str, str], reason: str
) -> None:
    sent = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-9", **headers}
    answer = await server.http.post("/hooks/hooked/push", content=PUSH, headers=sent)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    await server.settled()
    assert await runs(server) == []
    [record] = await server.runtime.store.records("hooked", "push")
    assert record.decision == "rejected" and reason in record.reason
    # The refused delivery id was not taken: the real delivery still gets its run.
    real = await server.http.post(
        "/hooks/hooked/push", content=PUSH, headers=github_headers(PUSH, "d-9")
    )
    assert real.json()["status"] == "accepted"


async def test_a_stale_standard_webhook_is_refused(server: Server) -> None:
    import base64
    import hashlib
    import hmac

    await server.register(
        """
        name: std
        params: {n: {type: int}}
        tasks: [{name: a, script: "true"}]
        triggers:
          - name: event
            webhook: {preset: standard, secret_env: TEST_HOOK_SECRET, params: {n: "body['n']"}}
        """
    )
    body = b'{"n": 3}'

    def headers(stamp: int) -> dict[str, str]:
        signed = f"msg_1.{stamp}.".encode() + body
        mac = hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()
        return {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(stamp),
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }

    stale = await server.http.post(
        "/hooks/std/event", content=body, headers=headers(int(time.time()) - 3600)
    )
    assert stale.status_code == 401
    fresh = await server.http.post(
        "/hooks/std/event", content=body, headers=headers(int(time.time()))
    )
    assert fresh.status_code == 202
    await server.settled()
    state = await server.engine.client.watch(fresh.json()["run_id"], timeout=10)
    assert state.params == {"n": 3}


async def test_an_oversized_body_gets_413_and_starts_nothing(server: Server) -> None:
    import hashlib
    import hmac

    body = json.dumps({"id": "x", "repo": "r" * 2000}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = await server.http.post(
        "/hooks/hooked/plain", content=body, headers={"X-Signature": signature}
    )
    assert answer.status_code == 413

    # A sender that does not declare its length is cut off at the limit too.
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 100

    streamed = await server.http.post(
        "/hooks/hooked/plain", content=chunks(), headers={"X-Signature": signature}
    )
    assert streamed.status_code == 413
    await server.settled()
    assert await runs(server) == []
    assert [r.decision for r in await server.runtime.store.records("hooked", "plain")] == [
        "rejected",
        "rejected",
    ]


async def test_when_filters_and_a_bad_body_fails_visibly(server: Server) -> None:
    ping = await server.http.post(
        "/hooks/hooked/push", content=PUSH, headers=github_headers(PUSH, "d-2", event="ping")
    )
    not_json = b"not json"
    broken = await server.http.post(
        "/hooks/hooked/push", content=not_json, headers=github_headers(not_json, "d-3")
    )
    assert ping.status_code == broken.status_code == 202
    await server.settled()
    assert await runs(server) == []
    by_key = {r.key: r for r in await server.runtime.store.records("hooked", "push")}
    assert by_key["d-2"].decision == "filtered"
    assert by_key["d-3"].decision == "failed"
    assert "NoneType" in by_key["d-3"].reason or "None" in by_key["d-3"].reason


async def test_the_dedup_expression_names_the_delivery(server: Server) -> None:
    import hashlib
    import hmac

    ids = []
    for repo in ("one", "two"):
        body = json.dumps({"id": "evt-7", "repo": repo}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        answer = await server.http.post(
            "/hooks/hooked/plain", content=body, headers={"X-Signature": signature}
        )
        ids.append(answer.json())
    assert ids[0]["run_id"] == ids[1]["run_id"]
    assert [i["status"] for i in ids] == ["accepted", "duplicate"]


async def test_unknown_hooks_and_bad_names_are_404(server: Server) -> None:
    for path in (
        "/hooks/nothing/push",
        "/hooks/hooked/nothing",
        "/hooks/hooked/..%2F..",
        "/hooks/h%00/x",
    ):
        answer = await server.http.post(path, content=b"{}")
        assert answer.status_code == 404, path
    # A schedule or other trigger is not a webhook.
    assert (await server.http.post("/hooks/hooked/build", content=b"{}")).status_code == 404


async def test_an_unsigned_hook_takes_its_params_from_the_query(server: Server) -> None:
    answer = await server.http.post("/hooks/hooked/open?repo=q%2Fr", content=b"")
    await server.settled()
    state = await server.engine.client.watch(answer.json()["run_id"], timeout=10)
    assert state.params["repo"] == "q/r"


async def test_an_arrival_left_in_the_inbox_is_started_by_the_sweep(server: Server) -> None:
    from engine.triggers.firing import Arrival

    # As if a server admitted a delivery and died before starting its run.
    arrival = Arrival(
        workflow="hooked",
        version=1,
        trigger="open",
        kind="webhook",
        key="k-1",
        names={"query": {"repo": "left/over"}, "body": None, "headers": {}, "text": ""},
        at=0.0,
    )
    assert await server.runtime.firing.admit(arrival)
    assert await server.runtime.sweep_now() == 1
    state = await server.engine.client.watch(arrival.run_id, timeout=10)
    assert state.params["repo"] == "left/over"
    assert await server.runtime.store.pending() == []


async def test_a_signed_webhook_can_release_a_waiting_run(server: Server) -> None:
    import hashlib
    import hmac

    await server.register(
        """
        name: gated
        tasks:
          - name: approval
            wait: {}
          - name: after
            depends: [approval]
            env: {WHO: "{{ tasks.approval.outputs.result.who }}"}
            script: echo "released by $WHO"
        triggers:
          - name: start
            webhook: {preset: none}
          - name: approve
            webhook:
              preset: hmac
              secret_env: TEST_HOOK_SECRET
              signal: approval
              run: "body['run']"
              params: {who: "body['who']"}
        """
    )
    started = await server.http.post("/hooks/gated/start")
    await server.settled()
    run_id = started.json()["run_id"]
    for body in (
        json.dumps({"run": "0" * 32, "who": "x"}).encode(),  # no such run
        json.dumps({"run": run_id, "who": "grace"}).encode(),
    ):
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        answer = await server.http.post(
            "/hooks/gated/approve", content=body, headers={"X-Signature": signature}
        )
        assert answer.status_code == 202 and answer.json()["signal"] == "approval"
        await server.settled()
    state = await server.engine.client.watch(run_id, timeout=10)
    assert state.nodes["after"].outputs()["result"] == "released by grace"
    decisions = [
        (r.decision, r.run_id) for r in await server.runtime.store.records("gated", "approve")
    ]
    assert ("signalled", run_id) in decisions
    assert any(d == "failed" for d, _ in decisions)


async def test_a_store_that_does_not_answer_gets_503_and_admits_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is needed to stop a Redis")
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    redis = LocalRedis(tmp_path / "redis")
    redis.start()
    store = RedisTriggerStore(redis.url)
    try:
        async with EmbeddedEngine(workers=2) as engine:
            runtime = TriggerRuntime(store, engine.client, transport=engine.transport)
            await runtime.registry.register(parse_workflow(HOOKED))
            await runtime.registry.refresh()
            transport = httpx.ASGITransport(app=create_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                redis.stop()
                answer = await http.post(
                    "/hooks/hooked/push", content=PUSH, headers=github_headers(PUSH)
                )
                assert answer.status_code == 503
                assert answer.headers["retry-after"]
                assert "Redis did not answer (admit)" in answer.json()["detail"]
                redis.start()  # the same port and data
                # Nothing was taken: the sender's retry is the delivery's one run.
                again = await http.post(
                    "/hooks/hooked/push", content=PUSH, headers=github_headers(PUSH)
                )
                assert again.status_code == 202 and again.json()["status"] == "accepted"
                await runtime.stop()
    finally:
        await store.close()
        redis.stop()
