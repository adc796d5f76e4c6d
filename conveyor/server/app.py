"""The HTTP application: webhooks (and, later, the API and the UI) on FastAPI."""

from __future__ import annotations

import importlib.metadata
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from contracts.errors import ConveyorError
from contracts.ports import ArtifactStore
from conveyor.server.access import ApiContext, ApiProblem, needs, problem_of
from conveyor.server.api import build_router
from conveyor.server.auth import Scope, Tokens
from conveyor.server.limits import BodyLimit, BodyTooLarge, allow_body
from conveyor.server.runtime import TriggerRuntime
from conveyor.server.ui import HERE, build_ui
from conveyor.settings import MAX_REQUEST_BYTES
from engine.triggers.webhooks import WebhookRequest

STATIC = HERE / "static"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")


RETRY_AFTER_S = 5
"""What a 503 asks its sender to wait (webhook senders that retry read it)."""


def problem(status: int, title: str, detail: str = "") -> JSONResponse:
    """An RFC 9457 problem document."""
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def create_app(
    runtime: TriggerRuntime,
    *,
    open_access: bool = True,
    distributed: bool = False,
    artifacts: ArtifactStore | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> FastAPI:
    """The server's application. ``open_access``: the API needs no token (embedded, on
    loopback, no token made). ``max_request_bytes``: the largest body the API and the UI
    read (webhooks have their own limit, per trigger)."""
    app = FastAPI(
        title="Conveyor",
        version=importlib.metadata.version("conveyor"),
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.api = ApiContext(
        runtime=runtime,
        tokens=Tokens(runtime.store),
        open=open_access,
        distributed=distributed,
        artifacts=artifacts,
    )
    app.include_router(build_router())
    app.include_router(build_ui())
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: ApiProblem) -> Response:
        if exc.status == 401 and not request.url.path.startswith(("/api/", "/metrics")):
            return RedirectResponse("/login", status_code=303)  # a person, in the UI
        return problem(exc.status, exc.title, exc.detail)

    @app.exception_handler(ConveyorError)
    async def conveyor_error(_request: Request, exc: ConveyorError) -> JSONResponse:
        status, title, detail = problem_of(exc)
        if status == 500:
            status, title, detail = 503, "the engine did not answer", str(exc)
        return problem(status, title, detail)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return problem(400, "bad request", where)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return problem(exc.status_code, "payload too large", exc.detail)
        return problem(exc.status_code, str(exc.detail))

    # Metrics name workflows, pools and triggers: a scraper presents a read token as
    # the API's callers do (Prometheus: ``authorization: {credentials_file: ...}``).
    @app.get("/metrics", include_in_schema=False, dependencies=[needs(Scope.READ)])
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok"}

    @app.post("/hooks/{workflow}/{trigger}", status_code=202)
    async def webhook(workflow: str, trigger: str, request: Request) -> JSONResponse:
        """Receive a delivery: 202 with the run id once it is durably admitted."""
        if not (_NAME.match(workflow) and _NAME.match(trigger)):
            return problem(404, "no such webhook")
        served = runtime.webhooks.find(workflow, trigger)
        if served is None:
            return problem(404, "no such webhook", f"no webhook trigger {workflow}/{trigger}")
        hook = served.trigger.webhook
        assert hook is not None
        allow_body(request, hook.max_bytes)
        try:
            body = await request.body()
        except BodyTooLarge as refused:
            answer = await runtime.webhooks.too_large(served, refused.detail)
            return problem(answer.status, "payload too large", answer.body["detail"])
        headers = {name.lower(): value for name, value in request.headers.items()}
        answer = await runtime.webhooks.receive(
            served, WebhookRequest(headers, body, dict(request.query_params))
        )
        if answer.arrival is not None:
            runtime.handle_later(answer.arrival)
        if answer.status >= 400:
            return problem(answer.status, answer.body["error"], answer.body.get("detail", ""))
        return JSONResponse(answer.body, status_code=answer.status)

    return app
