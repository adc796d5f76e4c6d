"""The REST API: success, bad input (a problem document, never a 500) and auth."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.ports import LogLine
from contracts.vocabulary import RunStatus
from conveyor.server.app import create_app
from conveyor.server.auth import Scope, Tokens
from tests.server.conftest import Server

FANOUT = """
name: fan
params: {n: {type: int, default: 5}, fail_at: {type: int, default: -1}}
tasks:
  - name: each
    items: range(params.n)
    env: {I: "{{ item }}", F: "{{ params.fail_at }}"}
    script: 'echo "item $I"; test "$I" != "$F"'
  - name: gate
    depends: [each]
    wait: {}
"""


async def started(server: Server, **params: object) -> str:
    answer = await server.http.post("/api/v1/runs", json={"workflow": "fan", "params": params})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["run_id"])


async def until_waiting(server: Server, run_id: str) -> dict[str, object]:
    for _ in range(500):
        detail = (await server.http.get(f"/api/v1/runs/{run_id}")).json()
        tasks = {t["name"]: t for t in detail["tasks"]}
        if tasks["gate"]["state"] == "running" or detail["state"] != "running":
            return detail
        await asyncio.sleep(0.02)
    raise AssertionError("the run did not reach its wait step")


@pytest.fixture
async def api(server: Server) -> Server:
    await server.register(FANOUT)
    return server


async def test_workflows_are_listed_with_their_triggers(api: Server) -> None:
    listed = (await api.http.get("/api/v1/workflows")).json()["items"]
    names = {w["name"]: w for w in listed}
    assert names["hooked"]["triggers"][0] == {
        "name": "push",
        "kind": "webhook",
        "enabled": True,
        "problem": None,
    }
    one = (await api.http.get("/api/v1/workflows/fan")).json()
    assert one["version"] == 1 and one["document"]["name"] == "fan"
    assert (await api.http.get("/api/v1/workflows/nope")).status_code == 404


async def test_a_run_is_submitted_read_item_by_item_and_approved(api: Server) -> None:
    run_id = await started(api, n=5, fail_at=-1)
    detail = await until_waiting(api, run_id)
    each = next(t for t in detail["tasks"] if t["name"] == "each")  # type: ignore[attr-defined]
    assert each["fans_out"] and each["items"] == {"count": 5, "by_state": {"succeeded": 5}}
    page = (await api.http.get(f"/api/v1/runs/{run_id}/tasks/each/items?limit=2")).json()
    assert [i["index"] for i in page["items"]] == [0, 1] and page["next_offset"] == 2
    assert page["items"][1]["result"] == "item 1"
    rest = (await api.http.get(f"/api/v1/runs/{run_id}/tasks/each/items?offset=2")).json()
    assert [i["index"] for i in rest["items"]] == [2, 3, 4] and rest["next_offset"] is None
    # An offset past the last item, typed into the UI's URL, leads back to the last page.
    past = await api.http.get(f"/runs/{run_id}/tasks/each?offset=900")
    assert past.status_code == 200 and 'offset=0">← previous' in past.text
    logs = (await api.http.get(f"/api/v1/runs/{run_id}/logs?task=each&index=3")).json()
    assert [ln["text"] for ln in logs["items"] if ln["stream"] == "stdout"] == ["item 3"]
    paged: list[dict[str, Any]] = []
    after = ""
    for _ in range(100):
        got = await api.http.get(f"/api/v1/runs/{run_id}/logs?task=each&limit=2&after={after}")
        page = got.json()
        assert len(page["items"]) <= 2
        paged += page["items"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert [(ln["index"], ln["text"]) for ln in paged if ln["stream"] == "stdout"] == [
        (i, f"item {i}") for i in range(5)
    ]
    forged = await api.http.get(f"/api/v1/runs/{run_id}/logs?task=each&after=each:1:x")
    assert forged.status_code == 400 and "next_after" in forged.json()["detail"]
    approved = await api.http.post(f"/api/v1/runs/{run_id}/tasks/gate/approve")
    assert approved.status_code == 202
    state = await api.engine.client.watch(run_id, timeout=10)
    assert state.nodes["gate"].outputs()["result"] == {"approved": True, "by": "open"}
    events = (await api.http.get(f"/api/v1/runs/{run_id}/events?after=0&limit=3")).json()
    assert [e["position"] for e in events["items"]] == [1, 2, 3]
    assert events["items"][0]["type"] == "run_submitted"
    after = (await api.http.get(f"/api/v1/runs/{run_id}/events?after=3")).json()
    assert after["items"][0]["position"] == 4


async def test_submitting_checks_params_and_honours_idempotency_keys(api: Server) -> None:
    bad = await api.http.post("/api/v1/runs", json={"workflow": "fan", "params": {"n": "many"}})
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    assert "expected int" in bad.json()["detail"]
    unknown = await api.http.post("/api/v1/runs", json={"workflow": "fan", "params": {"x": 1}})
    assert unknown.status_code == 400 and "unknown parameter 'x'" in unknown.json()["detail"]
    misspelt = await api.http.post("/api/v1/runs", json={"workflow": "fan", "param": {"n": 1}})
    assert misspelt.status_code == 400
    assert misspelt.json()["detail"] == "unknown field 'param' (known: params, version, workflow)"
    for body in (b"not json", b"[]", b'{"workflow": 3}', b'{"workflow": "fan", "params": []}'):
        answer = await api.http.post("/api/v1/runs", content=body)
        assert answer.status_code == 400, body
    missing = await api.http.post("/api/v1/runs", json={"workflow": "ghost"})
    assert missing.status_code == 404
    key = {"Idempotency-Key": "order-17"}
    first = await api.http.post("/api/v1/runs", json={"workflow": "fan"}, headers=key)
    again = await api.http.post("/api/v1/runs", json={"workflow": "fan"}, headers=key)
    assert first.json()["run_id"] == again.json()["run_id"]
    await until_waiting(api, first.json()["run_id"])
    assert len((await api.http.get("/api/v1/runs?workflow=fan")).json()["items"]) == 1


async def test_runs_page_with_a_cursor(api: Server) -> None:
    ids = [await started(api, n=1) for _ in range(5)]
    for run_id in ids:
        await until_waiting(api, run_id)
    seen: list[str] = []
    url = "/api/v1/runs?workflow=fan&limit=2"
    while True:
        page = (await api.http.get(url)).json()
        seen += [r["run_id"] for r in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/api/v1/runs?workflow=fan&limit=2&cursor={page['next_cursor']}"
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert (await api.http.get("/api/v1/runs?cursor=garbage")).status_code == 400
    by_api = (await api.http.get("/api/v1/runs?trigger=api&limit=500")).json()["items"]
    assert {r["run_id"] for r in by_api} >= set(ids) and {r["trigger"] for r in by_api} == {"api"}
    assert (await api.http.get("/api/v1/runs?trigger=webhook")).json()["items"] == []
    first = min(r["submitted_at"] for r in by_api)
    assert len((await api.http.get(f"/api/v1/runs?until={first}")).json()["items"]) == 1
    assert (await api.http.get("/api/v1/runs?trigger=a%20b")).status_code == 400
    assert (await api.http.get("/api/v1/runs?state=weird")).status_code == 400


async def test_actions_on_runs_that_cannot_take_them_are_refused(api: Server) -> None:
    run_id = await started(api, n=2, fail_at=1)
    final = await api.engine.client.watch(run_id, timeout=10)
    assert final.status == "failed"
    assert (await api.http.post(f"/api/v1/runs/{run_id}/cancel")).status_code == 400
    assert (await api.http.post(f"/api/v1/runs/{run_id}/signals/gate")).status_code == 400
    assert (await api.http.post(f"/api/v1/runs/{run_id}/tasks/each/approve")).status_code == 404
    retried = await api.http.post(f"/api/v1/runs/{run_id}/retry")
    assert retried.status_code == 202 and retried.json()["round"] == 1
    for path in (f"/api/v1/runs/{'f' * 32}", "/api/v1/runs/XYZ", "/api/v1/runs/../etc"):
        assert (await api.http.get(path)).status_code == 404, path


async def test_the_event_stream_follows_a_run_and_resumes(api: Server) -> None:
    run_id = await started(api, n=3)
    await until_waiting(api, run_id)
    await api.http.post(f"/api/v1/runs/{run_id}/tasks/gate/approve")
    async with api.http.stream("GET", f"/api/v1/runs/{run_id}/events/stream") as stream:
        ids, kinds = [], []
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("event: "):
                kinds.append(line[7:])
    assert kinds[0] == "run_submitted" and kinds[-1] == "run_completed"
    assert ids == list(range(1, len(ids) + 1))
    headers = {"Last-Event-ID": str(ids[-2])}
    async with api.http.stream(
        "GET", f"/api/v1/runs/{run_id}/events/stream", headers=headers
    ) as stream:
        tail = [line async for line in stream.aiter_lines() if line.startswith("id: ")]
    assert tail == [f"id: {ids[-1]}"]


async def approved_after_shown(api: Server) -> tuple[str, int]:
    """A run approved once a page showed its events up to its wait: its id, and how many
    events that page showed."""
    run_id = await started(api, n=3)
    await until_waiting(api, run_id)
    shown = len((await api.http.get(f"/api/v1/runs/{run_id}/events?limit=1000")).json()["items"])
    await api.http.post(f"/api/v1/runs/{run_id}/tasks/gate/approve")
    return run_id, shown


async def test_the_event_stream_starts_after_what_a_page_already_shows(api: Server) -> None:
    run_id, shown = await approved_after_shown(api)
    url = f"/api/v1/runs/{run_id}/events/stream?after={shown}"
    async with api.http.stream("GET", url) as stream:
        ids = [int(line[4:]) async for line in stream.aiter_lines() if line.startswith("id: ")]
    assert ids[0] == shown + 1 and ids[-1] > shown  # the approval's events, not the ones before
    # A reconnecting browser's Last-Event-ID wins over the page's starting point.
    headers = {"Last-Event-ID": str(ids[-2])}
    async with api.http.stream("GET", f"{url}", headers=headers) as stream:
        tail = [line async for line in stream.aiter_lines() if line.startswith("id: ")]
    assert tail == [f"id: {ids[-1]}"]


async def test_the_event_stream_can_say_only_what_changed(api: Server) -> None:
    run_id, shown = await approved_after_shown(api)
    url = f"/api/v1/runs/{run_id}/events/stream?after={shown}&changes=true"
    kinds, ids, counted = [], [], 0
    async with api.http.stream("GET", url) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kinds.append(line[7:])
            elif line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("data: ") and kinds[-1] == "changes":
                counted += json.loads(line[6:])["count"]
    events = (await api.http.get(f"/api/v1/runs/{run_id}/events?after={shown}")).json()["items"]
    assert set(kinds[:-1]) == {"changes"} and kinds[-1] == "run_completed"
    assert counted == len(events) and ids[-1] == shown + len(events)
    assert ids == sorted(ids)


async def stream_lines(api: Server, url: str, **headers: str) -> tuple[list[str], list[int]]:
    """The texts of the lines a log stream sends and the ids it gives, once it has ended."""
    texts: list[str] = []
    ids: list[int] = []
    ended = False
    async with api.http.stream("GET", url, headers=headers) as stream:
        async for raw in stream.aiter_lines():
            if raw.startswith("id: "):
                ids.append(int(raw[4:]))
            elif raw.startswith('data: {"'):
                texts.append(json.loads(raw[6:])["text"])
            elif raw == "event: end":
                ended = True
    assert ended, "the stream was cut off before the run's end"
    return texts, ids


async def test_a_fan_out_task_streams_whole_or_item_by_item(api: Server) -> None:
    run_id = await started(api, n=3)
    await until_waiting(api, run_id)
    await api.http.post(f"/api/v1/runs/{run_id}/tasks/gate/approve")
    base = f"/api/v1/runs/{run_id}/logs/stream"
    whole, ids = await stream_lines(api, f"{base}?task=each")  # ends with the run
    events = (await api.http.get(f"/api/v1/runs/{run_id}/events?limit=1000")).json()["items"]
    assert sorted(whole) == ["item 0", "item 1", "item 2"]
    assert ids == [len(events)]  # one read: its last line carries the place reached
    assert (await stream_lines(api, f"{base}?task=each&index=1"))[0] == ["item 1"]
    assert sorted((await stream_lines(api, base))[0]) == ["item 0", "item 1", "item 2"]
    # Taken up again after the event that ended item 0: the others' lines, not its own.
    item_0_ended = next(
        e["position"]
        for e in events
        if e["type"] == "task_succeeded" and e["task"] == "each" and e["index"] == 0
    )
    resumed, _ = await stream_lines(
        api, f"{base}?task=each", **{"Last-Event-ID": str(item_0_ended)}
    )
    assert sorted(resumed) == sorted(t for t in whole if t != "item 0")
    assert (await stream_lines(api, f"{base}?task=each", **{"Last-Event-ID": str(ids[-1])}))[
        0
    ] == []


async def test_a_stream_follows_lines_as_attempts_print_them(api: Server) -> None:
    """Lines an attempt prints while the stream is open come once each, and the stream
    ends with the run."""
    run_id = await started(api, n=1)
    await until_waiting(api, run_id)
    store = api.engine.store

    def line(text: str) -> LogLine:
        return LogLine(
            run_id=run_id, task="gate", index=0, attempt=1, stream="stdout", at=1.0, text=text
        )

    await store.write_lines([line("before")])
    read_pages = asyncio.Event()
    real_page = store.page_lines

    async def page_lines(*args: Any, **kwargs: Any) -> Any:
        page = await real_page(*args, **kwargs)
        read_pages.set()  # the stream is open and has read what was stored
        return page

    store.page_lines = page_lines  # type: ignore[method-assign]

    async def print_then_approve() -> None:
        await read_pages.wait()
        await store.write_lines([line("while open 1"), line("while open 2")])
        await api.http.post(f"/api/v1/runs/{run_id}/tasks/gate/approve")

    meanwhile = asyncio.create_task(print_then_approve())
    sent, _ids = await stream_lines(api, f"/api/v1/runs/{run_id}/logs/stream?task=gate")
    await meanwhile
    assert sent == ["before", "while open 1", "while open 2"]


NIGHTLY = """
name: nightly
triggers:
  - name: midnight
    schedule: {cron: "0 0 * * *"}
tasks:
  - name: report
    script: "true"
"""


async def test_a_schedule_fired_by_hand_starts_its_run_and_says_so_in_its_log(
    server: Server,
) -> None:
    await server.register(NIGHTLY)

    fired = await server.http.post("/api/v1/workflows/nightly/triggers/midnight/fire")

    assert fired.status_code == 202
    run_id = fired.json()["run_id"]
    assert (await server.engine.client.watch(run_id, timeout=20)).status == RunStatus.SUCCEEDED
    log = await server.http.get("/api/v1/workflows/nightly/triggers/midnight/records")
    [record] = log.json()["items"]
    assert (record["decision"], record["reason"], record["run_id"]) == (
        "fired",
        "fired by hand",
        run_id,
    )


async def test_the_openapi_document_describes_every_endpoint(api: Server) -> None:
    document = (await api.http.get("/api/v1/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/api/v1/runs",
        "/api/v1/runs/{run}",
        "/api/v1/runs/{run}/tasks/{task}/items",
        "/api/v1/runs/{run}/events/stream",
        "/api/v1/workflows/{name}/triggers/{trigger}/fire",
    ):
        assert path in paths, path


@pytest.fixture
async def closed(server: Server) -> AsyncIterator[tuple[Server, dict[Scope, str]]]:
    tokens = Tokens(server.runtime.store)
    made = {scope: await tokens.create(scope.name.lower(), scope) for scope in Scope}
    app = create_app(server.runtime, open_access=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield Server(server.runtime, server.engine, http), made


async def test_without_a_token_401_and_with_too_small_a_scope_403(
    closed: tuple[Server, dict[Scope, str]],
) -> None:
    server, made = closed
    await server.register(FANOUT)
    assert (await server.http.get("/api/v1/runs")).status_code == 401
    bad = {"Authorization": "Bearer cvy_nothing_here"}
    assert (await server.http.get("/api/v1/runs", headers=bad)).status_code == 401
    reader = {"Authorization": f"Bearer {made[Scope.READ]}"}
    runner = {"Authorization": f"Bearer {made[Scope.RUN]}"}
    assert (await server.http.get("/api/v1/runs", headers=reader)).status_code == 200
    body = {"workflow": "fan", "params": {"n": 1}}
    refused = await server.http.post("/api/v1/runs", json=body, headers=reader)
    assert refused.status_code == 403 and "needs run" in refused.json()["detail"]
    assert (await server.http.post("/api/v1/runs", json=body, headers=runner)).status_code == 202
    fire = "/api/v1/workflows/fan/triggers/x/fire"
    assert (await server.http.post(fire, headers=runner)).status_code == 403
    # A cookie alone does not steer runs (another site could make a browser send it).
    server.http.cookies.set("conveyor_token", made[Scope.RUN])
    assert (await server.http.get("/api/v1/runs")).status_code == 200  # reading is fine
    cookie_only = await server.http.post("/api/v1/runs", json=body)
    assert cookie_only.status_code == 403
    server.http.cookies.clear()
    token_id = made[Scope.READ].split("_")[1]
    await Tokens(server.runtime.store).revoke(token_id)
    assert (await server.http.get("/api/v1/runs", headers=reader)).status_code == 401


SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=32), min_size=1, max_size=40
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    run=SEGMENT,
    task=SEGMENT,
    query=st.dictionaries(
        st.sampled_from(["limit", "offset", "after", "state", "cursor", "index", "attempt"]),
        SEGMENT,
        max_size=4,
    ),
    body=st.one_of(st.binary(max_size=200), st.just(b'{"workflow": "fan"}')),
)
def test_no_input_makes_a_500(
    api_for_fuzz: Server, run: str, task: str, query: dict[str, str], body: bytes
) -> None:
    from urllib.parse import quote

    run_part, task_part = quote(run, safe=""), quote(task, safe="")
    paths = [
        f"/api/v1/runs/{run_part}",
        f"/api/v1/runs/{run_part}/tasks/{task_part}/items",
        f"/api/v1/runs/{run_part}/events",
        f"/api/v1/runs/{run_part}/logs",
        f"/api/v1/runs/{run_part}/artifacts/{task_part}/{task_part}",
        "/api/v1/runs",
        f"/api/v1/workflows/{run_part}",
        f"/api/v1/workflows/{run_part}/triggers/{task_part}/records",
    ]
    posts = [
        "/api/v1/runs",
        f"/api/v1/runs/{run_part}/cancel",
        f"/api/v1/runs/{run_part}/signals/{task_part}",
        f"/api/v1/runs/{run_part}/tasks/{task_part}/approve",
        f"/api/v1/workflows/{run_part}/triggers/{task_part}/fire",
    ]

    async def probe() -> None:
        for path in paths:
            answer = await api_for_fuzz.http.get(path, params=query)
            assert answer.status_code < 500, (path, query, answer.text)
        for path in posts:
            answer = await api_for_fuzz.http.post(path, params=query, content=body)
            assert answer.status_code < 500, (path, body, answer.text)

    api_for_fuzz.loop.run_until_complete(probe())


class FuzzServer(Server):
    loop: asyncio.AbstractEventLoop


@pytest.fixture(scope="module")
def api_for_fuzz() -> object:
    """One server for every generated example (hypothesis calls the test many times)."""
    from conveyor.embedded import EmbeddedEngine
    from conveyor.server.runtime import TriggerRuntime
    from engine.triggers.stores.memory import MemoryTriggerStore
    from tests.server.conftest import HOOKED, SECRET

    # Set for this module only: a secret left in the environment is inherited by the
    # servers later tests start, whose webhooks are signed with secrets of their own.
    environment = pytest.MonkeyPatch()
    environment.setenv("TEST_HOOK_SECRET", SECRET)
    loop = asyncio.new_event_loop()
    engine = EmbeddedEngine(workers=2)
    loop.run_until_complete(engine.start())
    runtime = TriggerRuntime(MemoryTriggerStore(), engine.client, sweep_interval=3600)
    loop.run_until_complete(runtime.start())
    transport = httpx.ASGITransport(app=create_app(runtime))
    http = httpx.AsyncClient(transport=transport, base_url="http://test")
    server = FuzzServer(runtime, engine, http)
    server.loop = loop
    loop.run_until_complete(server.register(HOOKED))
    loop.run_until_complete(server.register(FANOUT))
    yield server
    loop.run_until_complete(http.aclose())
    loop.run_until_complete(runtime.stop())
    loop.run_until_complete(engine.stop())
    loop.close()
    environment.undo()


async def test_metrics_count_runs_tasks_and_trigger_decisions(api: Server) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from conveyor.metrics import RunMetrics

    api.engine.coordinator.observe(RunMetrics())

    async def figures() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = (await api.http.get("/metrics")).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    before = await figures()
    run_id = await started(api, n=3, fail_at=1)
    await api.engine.client.watch(run_id, timeout=10)
    await api.http.post("/hooks/hooked/open?repo=x")
    await api.settled()
    after = await figures()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("conveyor_runs_finished_total", workflow="fan", state="failed") == 1
    assert grew("conveyor_task_attempts_finished_total", workflow="fan", state="succeeded") == 2
    assert grew("conveyor_task_attempts_finished_total", workflow="fan", state="failed") == 1
    assert grew("conveyor_task_queue_wait_seconds_count") == 3
    assert (
        grew(
            "conveyor_trigger_decisions_total",
            workflow="hooked",
            kind="webhook",
            decision="accepted",
        )
        == 1
    )


async def test_every_endpoint_needs_a_token_and_enough_scope(
    closed: tuple[Server, dict[Scope, str]],
) -> None:
    server, made = closed
    document = (await server.http.get("/api/v1/openapi.json")).json()
    filled = {"run": "a" * 32, "task": "t", "name": "n", "trigger": "x"}
    checked = 0
    for path, methods in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue  # webhooks check their own signatures; /healthz tells only "ok"
        url = path.format(**filled)
        for method in methods:
            answer = await server.http.request(method.upper(), url)
            assert answer.status_code == 401, (method, path, answer.status_code)
            if method != "get":
                reader = {"Authorization": f"Bearer {made[Scope.READ]}"}
                refused = await server.http.request(method.upper(), url, headers=reader)
                assert refused.status_code == 403, (method, path, refused.status_code)
            checked += 1
    assert checked >= 18


async def test_metrics_need_a_read_token_when_the_api_does(
    closed: tuple[Server, dict[Scope, str]],
) -> None:
    server, made = closed
    refused = await server.http.get("/metrics")
    assert refused.status_code == 401  # a scraper gets a problem, not the UI's login page
    assert refused.headers["content-type"] == "application/problem+json"
    forged = await server.http.get("/metrics", headers={"Authorization": "Bearer cvy_x_y"})
    assert forged.status_code == 401
    reader = {"Authorization": f"Bearer {made[Scope.READ]}"}
    answer = await server.http.get("/metrics", headers=reader)
    assert answer.status_code == 200 and "conveyor_runs_started_total" in answer.text
    assert (await server.http.get("/healthz")).status_code == 200  # probes need no token


async def test_dead_letters_are_shown_to_admins(api: Server) -> None:
    from contracts.topology import shard_queue

    await api.engine.transport.publish(shard_queue(0), [b"not a message"])
    for _ in range(200):
        found = (await api.http.get("/api/v1/dead-letters")).json()["items"]
        if found:
            break
        await asyncio.sleep(0.02)
    assert found and "not a message" in found[0]["body"]
