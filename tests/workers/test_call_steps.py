"""http and amqp steps against a real HTTP server and a real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator

import aio_pika
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from contracts.validation import parse_workflow, resolve_params
from contracts.vocabulary import RunStatus
from conveyor.embedded import EmbeddedEngine
from engine.state.model import RunState
from tests.amqp import amqp_channel
from tests.services import free_port

FLAKY = {"left": 1}


@pytest.fixture
async def service() -> AsyncIterator[str]:
    async def echo(request: Request) -> Response:
        return JSONResponse(
            {
                "method": request.method,
                "auth": request.headers.get("authorization"),
                "body": (await request.body()).decode(),
                "query": dict(request.query_params),
            }
        )

    async def flaky(request: Request) -> Response:
        if FLAKY["left"] > 0:
            FLAKY["left"] -= 1
            return PlainTextResponse("busy", status_code=503)
        return PlainTextResponse("fine")

    async def missing(request: Request) -> Response:
        return PlainTextResponse("no such thing", status_code=404)

    async def big(request: Request) -> Response:
        return PlainTextResponse("x" * 5000)

    app = Starlette(
        routes=[
            Route("/echo", echo, methods=["GET", "POST"]),
            Route("/flaky", flaky),
            Route("/missing", missing),
            Route("/big", big),
        ]
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def run(text: str, **params: object) -> RunState:
    workflow = parse_workflow(textwrap.dedent(text))
    async with EmbeddedEngine(workers=4) as engine:
        return await engine.run(workflow, resolve_params(workflow, params))


async def test_an_http_step_posts_json_and_its_result_is_the_parsed_response(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "t0ps3cret")
    state = await run(
        f"""
        name: calls
        params:
          n: {{type: int, default: 3}}
          token: {{from_env: API_TOKEN}}
        tasks:
          - name: ask
            env: {{TOKEN: "{{{{ params.token }}}}"}}
            http:
              url: "{service}/echo?n={{{{ params.n }}}}"
              method: POST
              headers: {{Authorization: "Bearer ${{TOKEN}}"}}
              body: {{n: "{{{{ params.n }}}}", items: [1, 2]}}
          - name: use
            depends: [ask]
            env: {{METHOD: "{{{{ tasks.ask.outputs.result.method }}}}"}}
            script: echo "$METHOD"
        """
    )
    assert state.status == RunStatus.SUCCEEDED, state.reason
    result = state.nodes["ask"].outputs()["result"]
    assert result["method"] == "POST"
    assert result["query"] == {"n": "3"}
    assert json.loads(result["body"]) == {"n": 3, "items": [1, 2]}
    # The secret reached the header and is masked in what the step reports.
    assert result["auth"] == "Bearer ***"
    assert state.nodes["use"].outputs()["result"] == "POST"


async def test_a_5xx_is_retried_and_a_4xx_is_not(service: str) -> None:
    FLAKY["left"] = 1
    state = await run(
        f"""
        name: calls
        tasks:
          - name: flaky
            retry: {{limit: 2, backoff: {{delay: 10ms}}}}
            http: {{url: "{service}/flaky"}}
          - name: missing
            retry: {{limit: 2, backoff: {{delay: 10ms}}}}
            http: {{url: "{service}/missing"}}
            continue_on_failure: true
        """
    )
    flaky, missing = state.nodes["flaky"], state.nodes["missing"]
    assert flaky.status == "succeeded" and flaky.instances[0].attempt == 2
    assert flaky.outputs()["result"] == "fine"
    assert missing.status == "failed" and missing.instances[0].attempt == 1
    assert "HTTP 404" in missing.instances[0].error


async def test_only_http_urls_within_the_size_limit(service: str) -> None:
    state = await run(
        f"""
        name: calls
        params: {{where: {{type: str, default: "file:///etc/passwd"}}}}
        tasks:
          - name: local
            http: {{url: "{{{{ params.where }}}}"}}
            continue_on_failure: true
          - name: big
            http: {{url: "{service}/big", max_bytes: 1000}}
            continue_on_failure: true
        """
    )
    assert "not an http(s) URL" in state.nodes["local"].instances[0].error
    assert "over 1,000 bytes" in state.nodes["big"].instances[0].error


async def test_an_amqp_step_gets_the_correlated_reply(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_AMQP_URL", amqp_url)
    queue_name = f"pricing.{free_port()}"
    async with amqp_channel(amqp_url) as channel:
        queue = await channel.declare_queue(queue_name, auto_delete=True)

        async def answer(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                asked = json.loads(message.body)
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps({"price": asked["qty"] * 2}).encode(),
                        correlation_id=message.correlation_id,
                    ),
                    routing_key=message.reply_to or "",
                )

        await queue.consume(answer)
        state = await run(
            f"""
            name: calls
            tasks:
              - name: price
                items: [1, 5]
                amqp: {{routing_key: {queue_name}, body: {{qty: "{{{{ item }}}}"}}}}
              - name: silence
                amqp: {{routing_key: nobody.{queue_name}, wait: 300ms}}
                continue_on_failure: true
            """
        )
    assert state.nodes["price"].outputs()["result"] == [{"price": 2}, {"price": 10}]
    silence = state.nodes["silence"].instances[0]
    assert silence.status == "failed" and "no reply" in silence.error
    # The three steps started together; the engine closed what they opened.
    assert broker_connections_open() == 0


def broker_connections_open() -> int:
    """aio-pika connections with their reader still running in this event loop."""
    return sum(
        "Connection.__reader" in getattr(task.get_coro(), "__qualname__", "")
        for task in asyncio.all_tasks()
    )


async def test_a_python_workflow_makes_http_steps_with_refs_as_dependencies(service: str) -> None:
    from tests.steps.callflows import ask_service

    spec = ask_service.spec
    assert spec.task("ask").depends == ["double"]
    async with EmbeddedEngine(workers=2) as engine:
        state = await engine.run(spec, resolve_params(spec, {"base": service}))
    result = state.nodes["ask"].outputs()["result"]
    assert result["query"] == {"m": "4"} and json.loads(result["body"]) == {"m": 4}
