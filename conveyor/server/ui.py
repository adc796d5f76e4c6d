"""The web UI: server-rendered pages (Jinja2, autoescaped) and a little JavaScript of our
own (``static/ui.js``), shipped in the package: nothing is loaded from elsewhere.

Pages read through the same client as the API; the JavaScript follows a run over the
API's event stream and calls the API's actions. A fan-out is one box and a page of
items at a time, so a run with 100,000 items is as light as one with ten.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from contracts.spec import Param, Workflow
from conveyor.report import outputs_shown, params_shown, short_value, when
from conveyor.server.access import ApiContext, ApiProblem, needs, run_id_param
from conveyor.server.auth import Scope
from conveyor.server.pictures import BOX_H, BOX_W, LABEL_W, dag, timeline
from conveyor.server.served import listed, resumable, run_stalled
from conveyor.server.shapes import items_page, previous_offset, task_shape
from engine.state.subflows import child_run_id
from engine.triggers.schedule import Schedule
from engine.triggers.scheduler import cursor_key, read_cursor

HERE = Path(__file__).resolve().parent
ATTEMPT_GANTT_EVENTS = 5000
"""Runs with at most this many events get a bar per attempt in their timeline."""
templates = Jinja2Templates(directory=str(HERE / "templates"))


def _defaults(spec: Workflow) -> str:
    """The parameters a run would be started with, as the JSON the start form sends."""
    given = {n: p.default for n, p in spec.params.items() if not (p.is_secret or p.required)}
    return json.dumps(given, indent=2, default=str) if given else "{}"


def _param_line(name: str, param: Param) -> dict[str, str]:
    """A parameter as the start form describes it: its type, and its default, or that it
    must be given, or where a secret comes from."""
    if param.from_env is not None:  # a secret always names its variable
        said = f"secret from ${param.from_env}"
    elif param.required:
        said = f"{param.type}, required"
    else:
        said = f"{param.type}, default {short_value(json.dumps(param.default, default=str), 80)}"
    return {"name": name, "said": said, "description": param.description or ""}


def _took(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    # A step's start comes stamped by its worker's clock, which may run a little ahead.
    seconds = max(0.0, (end or time.time()) - start)
    return f"{seconds:.2f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


templates.env.filters["when"] = when
templates.env.filters["short"] = lambda value: short_value(value, 120)
templates.env.globals.update(
    took=_took, child_run=child_run_id, BOX_W=BOX_W, BOX_H=BOX_H, LABEL_W=LABEL_W
)


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.api
    return context


def build_ui() -> APIRouter:
    ui = APIRouter(include_in_schema=False)
    read = needs(Scope.READ)

    @ui.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/runs", status_code=303)

    @ui.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, error: str = "") -> Response:
        return templates.TemplateResponse(request, "login.html", {"error": error})

    @ui.post("/login")
    async def login(request: Request, token: str = Form(max_length=200)) -> Response:
        caller = await _context(request).tokens.check(token.strip())
        if caller is None:
            return templates.TemplateResponse(
                request, "login.html", {"error": "unknown or revoked token"}, status_code=401
            )
        answer = RedirectResponse("/runs", status_code=303)
        answer.set_cookie(
            "conveyor_token", token.strip(), httponly=True, samesite="strict", max_age=86400 * 7
        )
        return answer

    @ui.get("/runs", response_class=HTMLResponse, dependencies=[read])
    async def runs_page(
        request: Request,
        workflow: str | None = Query(None, max_length=63),
        state: str | None = Query(None, pattern="^(running|succeeded|failed|cancelled)?$"),
        cursor: str | None = Query(None, max_length=80),
        trigger: str | None = Query(None, pattern="^(cli|api|webhook|schedule|queue|sensor)?$"),
        top_level: bool = False,
        partial: bool = False,
    ) -> Response:
        before = None
        if cursor:
            at, _, run_id = cursor.partition("~")
            try:
                before = (float(at), run_id)
            except ValueError:
                raise ApiProblem(400, "bad cursor") from None
        limit = 50
        rows = await _context(request).runtime.client.runs(
            workflow=workflow or None,
            state=state or None,
            trigger=trigger or None,
            limit=limit,
            before=before,
            top_level=top_level,
        )
        next_cursor = f"{rows[-1].submitted_at!r}~{rows[-1].run_id}" if len(rows) == limit else None
        shown = {"workflow": workflow or "", "state": state or "", "trigger": trigger or ""}
        page = {
            "runs": listed(_context(request).runtime.client, rows, time.time()),
            **shown,
            "top_level": top_level,
            # The filters as a query, for the page's refreshes and its next page.
            "filters": urlencode(shown | ({"top_level": "true"} if top_level else {})),
            "next_cursor": next_cursor,
            "workflows": _context(request).runtime.registry.names(),
        }
        name = "runs_rows.html" if partial else "runs.html"
        return templates.TemplateResponse(request, name, page)

    async def _run_page(request: Request, run: str) -> dict[str, Any]:
        client = _context(request).runtime.client
        state = await client.state(run)
        # Attempt by attempt while the log is small; a big run's picture is per task.
        events = (
            await client.events(state.run_id)
            if state.events_folded <= ATTEMPT_GANTT_EVENTS
            else None
        )
        stalled = run_stalled(client, state, time.time())
        return {
            "run": state,
            "stalled": stalled,
            "resumable": resumable(client, state, stalled),
            "params": params_shown(state, width=120),
            "outputs": outputs_shown(state, width=120),
            "tasks": [task_shape(node) for node in state.nodes.values()],
            "graph": dag(state),
            "timeline": timeline(state, time.time(), events),
            "waits": [
                n.spec.name
                for n in state.nodes.values()
                if n.spec.signal and str(n.status) == "running"
            ],
        }

    @ui.get("/runs/{run}", response_class=HTMLResponse, dependencies=[read])
    async def run_page(request: Request, run: str) -> Response:
        return templates.TemplateResponse(
            request, "run.html", await _run_page(request, run_id_param(run))
        )

    @ui.get("/runs/{run}/live", response_class=HTMLResponse, dependencies=[read])
    async def run_live(request: Request, run: str) -> Response:
        return templates.TemplateResponse(
            request, "run_live.html", await _run_page(request, run_id_param(run))
        )

    @ui.get("/runs/{run}/tasks/{task}", response_class=HTMLResponse, dependencies=[read])
    async def task_panel(
        request: Request,
        run: str,
        task: str,
        state: str | None = Query(None, pattern="^[a-z_]{0,20}$"),
        offset: int = Query(0, ge=0),
    ) -> Response:
        found = await _context(request).runtime.client.state(run_id_param(run))
        node = found.nodes.get(task)
        if node is None:
            raise ApiProblem(404, "no such task")
        page, next_offset = items_page(node, state=state or None, offset=offset, limit=50)
        before = previous_offset(node, state=state or None, offset=offset, limit=50)
        return templates.TemplateResponse(
            request,
            "task.html",
            {
                "run": found,
                "task": task_shape(node),
                "items": page,
                "offset": offset,
                "next_offset": next_offset,
                "previous_offset": before,
                "state": state or "",
                "total": len(node.instances),
            },
        )

    @ui.get("/workflows", response_class=HTMLResponse, dependencies=[read])
    async def workflows_page(request: Request) -> Response:
        runtime = _context(request).runtime
        now = datetime.now(UTC)
        found = []
        for name in runtime.registry.names():
            latest = runtime.registry.latest(name)
            assert latest is not None
            version, spec = latest
            triggers = []
            for trigger in spec.triggers:
                entry: dict[str, Any] = {
                    "name": trigger.name,
                    "kind": trigger.kind,
                    "problem": runtime.trigger_problem(name, version, trigger.name),
                }
                if trigger.schedule is not None:
                    entry["next"] = when(next(Schedule.of(trigger.schedule).fires(now)).timestamp())
                    cursor = read_cursor(await runtime.store.cursor(cursor_key(name, trigger.name)))
                    entry["last"] = (
                        when(cursor.last_fire) if cursor and cursor.last_fire else "never"
                    )
                entry["records"] = await runtime.store.records(name, trigger.name, limit=10)
                triggers.append(entry)
            found.append(
                {
                    "name": name,
                    "version": version,
                    "spec": spec,
                    "triggers": triggers,
                    "params": [_param_line(n, p) for n, p in spec.params.items()],
                    "defaults": _defaults(spec),
                }
            )
        return templates.TemplateResponse(request, "workflows.html", {"workflows": found})

    return ui
