"""The REST API, ``/api/v1``: workflows, runs, items, logs, events, artifacts, trigger
records, and the actions that steer runs. Errors are RFC 9457 problem documents.

Every request needs a bearer token with a large enough scope (``conveyor token
create``), unless the server runs open (embedded, on loopback, no token made).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from contracts.codec import to_builtins
from contracts.events import ArtifactRef
from contracts.validation import resolve_params
from contracts.vocabulary import TRIGGER_FILTER
from conveyor.server.access import (
    ApiProblem,
    context_of,
    log_position_param,
    log_position_text,
    name_param,
    needs,
    run_id_param,
)
from conveyor.server.auth import Caller, Scope
from conveyor.server.served import listed, run_stalled
from conveyor.server.shapes import items_page, run_shape
from conveyor.server.streams import CHANGES_EVERY, log_lines, run_events, sse_response
from engine.triggers.scheduler import tick_arrival

STREAM_POLL = 0.5
"""How often a log stream looks for new lines."""


def _artifact_ref(value: Any) -> ArtifactRef:
    return msgspec.convert(value, ArtifactRef)


SUBMIT_FIELDS = frozenset({"workflow", "params", "version"})
"""What the body of ``POST /runs`` may hold (a misspelt field is refused, not ignored)."""


def build_router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    read, run_scope, admin = needs(Scope.READ), needs(Scope.RUN), needs(Scope.ADMIN)

    # -- workflows ---------------------------------------------------------------------

    @api.get("/workflows", dependencies=[read])
    async def workflows(request: Request) -> dict[str, Any]:
        runtime = context_of(request).runtime
        registry = runtime.registry
        items = []
        for name in registry.names():
            latest = registry.latest(name)
            assert latest is not None
            version, spec = latest
            triggers = [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "enabled": t.enabled,
                    "problem": runtime.trigger_problem(name, version, t.name),
                }
                for t in spec.triggers
            ]
            items.append(
                {
                    "name": name,
                    "version": version,
                    "description": spec.description,
                    "triggers": triggers,
                }
            )
        return {"items": items}

    @api.get("/workflows/{name}", dependencies=[read])
    async def workflow(
        request: Request, name: str, version: int | None = Query(None, ge=1)
    ) -> dict[str, Any]:
        number, spec = await context_of(request).runtime.registry.get(
            name_param(name, "workflow"), version
        )
        return {
            "name": name,
            "version": number,
            "document": spec.model_dump(mode="json", exclude_unset=True, by_alias=True),
        }

    @api.get("/workflows/{name}/triggers/{trigger}/records", dependencies=[read])
    async def trigger_records(
        request: Request, name: str, trigger: str, limit: int = Query(100, ge=1, le=1000)
    ) -> dict[str, Any]:
        records = await context_of(request).runtime.store.records(
            name_param(name, "workflow"), name_param(trigger, "trigger"), limit=limit
        )
        return {"items": [msgspec.to_builtins(r) for r in records]}

    @api.post("/workflows/{name}/triggers/{trigger}/fire", status_code=202, dependencies=[admin])
    async def fire(request: Request, name: str, trigger: str) -> dict[str, Any]:
        """Fire a schedule now, by hand (its run id is that of this nominal time)."""
        runtime = context_of(request).runtime
        latest = runtime.registry.latest(name_param(name, "workflow"))
        if latest is None:
            raise ApiProblem(404, "no such workflow")
        version, spec = latest
        found = next((t for t in spec.triggers if t.name == trigger), None)
        if found is None or found.schedule is None:
            raise ApiProblem(404, "no such schedule", f"{name} has no schedule {trigger!r}")
        from datetime import UTC, datetime

        from engine.triggers.registry import Served

        arrival = tick_arrival(
            Served(spec, version, found), datetime.now(UTC), time.time(), origin="fired by hand"
        )
        await runtime.firing.admit_and_handle(arrival)
        return {"run_id": arrival.run_id, "nominal": arrival.key}

    # -- runs --------------------------------------------------------------------------

    @api.get("/runs", dependencies=[read])
    async def runs(
        request: Request,
        workflow: str | None = Query(None, max_length=63),
        state: str | None = Query(None, pattern="^(running|succeeded|failed|cancelled)$"),
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = Query(
            None, max_length=80, description="next_cursor of the previous page"
        ),
        trigger: str | None = Query(
            None, pattern=TRIGGER_FILTER, description="webhook, or webhook:push"
        ),
        since: float | None = Query(None, ge=0, description="submitted at or after (epoch s)"),
        until: float | None = Query(None, ge=0, description="submitted at or before (epoch s)"),
        top_level: bool = Query(False, description="leave out child runs (of workflow steps)"),
    ) -> dict[str, Any]:
        before = None
        if cursor is not None:
            at, _, run_id = cursor.partition("~")
            try:
                before = (float(at), run_id_param(run_id))
            except (ValueError, ApiProblem):
                raise ApiProblem(
                    400, "bad cursor", "use next_cursor from the previous page"
                ) from None
        rows = await context_of(request).runtime.client.runs(
            workflow=workflow,
            state=state,
            limit=limit,
            before=before,
            trigger=trigger,
            since=since,
            until=until,
            top_level=top_level,
        )
        next_cursor = f"{rows[-1].submitted_at!r}~{rows[-1].run_id}" if len(rows) == limit else None
        items = listed(context_of(request).runtime.client, rows, time.time())
        return {"items": items, "next_cursor": next_cursor}

    @api.post("/runs", status_code=202, dependencies=[run_scope])
    async def submit(
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        """Start a run of a registered workflow: {"workflow": NAME, "params": {...}}."""
        try:
            body = await request.json()
        except ValueError:
            raise ApiProblem(400, "bad request", "the body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("workflow"), str):
            raise ApiProblem(400, "bad request", 'send {"workflow": NAME, "params": {...}}')
        unknown = sorted(set(body) - SUBMIT_FIELDS)
        if unknown:
            known = ", ".join(sorted(SUBMIT_FIELDS))
            raise ApiProblem(400, "bad request", f"unknown field {unknown[0]!r} (known: {known})")
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise ApiProblem(400, "bad request", "params must be an object")
        runtime = context_of(request).runtime
        version = body.get("version")
        if version is not None and (not isinstance(version, int) or version < 1):
            raise ApiProblem(400, "bad request", "version must be a positive integer")
        number, spec = await runtime.registry.get(name_param(body["workflow"], "workflow"), version)
        resolved = resolve_params(spec, params, source="params")
        run_id = await runtime.client.submit(
            spec,
            resolved,
            trigger="api",
            idempotency_key=f"api:{idempotency_key}" if idempotency_key else None,
            workflow_version=number,
        )
        await runtime.firing.recorded(run_id)  # readable as soon as this answers
        return {"run_id": run_id, "workflow": spec.name, "version": number}

    @api.get("/runs/{run}", dependencies=[read])
    async def run_detail(request: Request, run: str) -> dict[str, Any]:
        client = context_of(request).runtime.client
        state = await client.state(run_id_param(run))
        stalled = run_stalled(client, state, time.time())
        return run_shape(state, stalled=stalled)

    @api.get("/runs/{run}/tasks/{task}/items", dependencies=[read])
    async def items(
        request: Request,
        run: str,
        task: str,
        state: str | None = Query(None, pattern="^[a-z_]{1,20}$"),
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        found = await context_of(request).runtime.client.state(run_id_param(run))
        node = found.nodes.get(name_param(task, "task"))
        if node is None:
            raise ApiProblem(404, "no such task", f"run {found.run_id} has no task {task!r}")
        page, next_offset = items_page(node, state=state, offset=offset, limit=limit)
        return {"items": page, "total": len(node.instances), "next_offset": next_offset}

    @api.get("/runs/{run}/events", dependencies=[read])
    async def events(
        request: Request,
        run: str,
        after: int = Query(0, ge=0),
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> dict[str, Any]:
        page = await context_of(request).runtime.client.events(
            run_id_param(run), after, limit=limit
        )
        return {
            "items": [{"position": after + i + 1, **to_builtins(e)} for i, e in enumerate(page)],
            "next_after": after + len(page),
        }

    @api.get("/runs/{run}/events/stream", dependencies=[read])
    async def event_stream(
        request: Request,
        run: str,
        after: int = Query(0, ge=0),
        changes: bool = Query(False),
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: each event as it is appended, from the first one or after
        the first ``after`` (a page already showing them); resumes after Last-Event-ID.
        With ``changes``, a ``changes`` event (how many, of which kinds) at most every
        quarter second instead, and ``run_completed`` in full."""
        client = context_of(request).runtime.client
        run_id = await client.find(run_id_param(run))
        if last_event_id and last_event_id.isdigit():
            after = int(last_event_id)
        events = run_events(
            client,
            run_id,
            after,
            every=CHANGES_EVERY if changes else None,
            gone=request.is_disconnected,
        )
        return sse_response(events, context_of(request).runtime.stopping)

    @api.get("/runs/{run}/logs", dependencies=[read])
    async def logs(
        request: Request,
        run: str,
        task: str | None = Query(None, max_length=63),
        index: int | None = Query(None, ge=0),
        attempt: int | None = Query(None, ge=1),
        after: str = Query("", max_length=100),
        limit: int = Query(5000, ge=1, le=50_000),
    ) -> dict[str, Any]:
        """A page of lines: task by name, then item, then attempt, then as printed.
        ``next_after`` is where the next page starts, ``null`` after the last line."""
        client = context_of(request).runtime.client
        position = log_position_param(after)
        page = await client.line_page(
            run_id_param(run), task, index, attempt, after=position, limit=limit
        )
        return {
            "items": [msgspec.to_builtins(ln) for ln in page.lines],
            "next_after": log_position_text(page.next),
        }

    @api.get("/runs/{run}/logs/stream", dependencies=[read])
    async def log_stream(
        request: Request,
        run: str,
        task: str | None = Query(None, max_length=63),
        index: int | None = Query(None, ge=0),
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: the lines of a run, a task or one item as they are written,
        until the run ends; takes up again from Last-Event-ID (a place in the run's log,
        ``streams.log_lines``)."""
        client = context_of(request).runtime.client
        run_id = await client.find(run_id_param(run))
        resumed = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        lines = log_lines(
            client,
            run_id,
            task,
            index,
            resumed=resumed,
            every=STREAM_POLL,
            gone=request.is_disconnected,
        )
        return sse_response(lines, context_of(request).runtime.stopping)

    @api.get("/runs/{run}/artifacts/{task}/{name}", dependencies=[read])
    async def artifact(
        request: Request, run: str, task: str, name: str, index: int = Query(0, ge=0)
    ) -> Response:
        context = context_of(request)
        found = await context.runtime.client.state(run_id_param(run))
        node = found.nodes.get(name_param(task, "task"))
        if node is None or index >= len(node.instances):
            raise ApiProblem(404, "no such artifact")
        raw = (node.instances[index].artifacts or {}).get(name_param(name, "artifact"))
        if raw is None or context.artifacts is None:
            raise ApiProblem(404, "no such artifact", f"{task}[{index}] has no artifact {name!r}")
        ref = _artifact_ref(raw)
        if ref.kind != "file":
            raise ApiProblem(
                409, "a directory", "download a directory artifact with conveyor artifact get"
            )
        # Fetched to a scratch file and streamed from there: an artifact may be far larger
        # than the server's memory.
        scratch = Path(tempfile.mkdtemp(prefix="conveyor-download-"))
        local = scratch / "artifact"
        try:
            await context.artifacts.get_path(ref, local)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return FileResponse(
            local,
            media_type="application/octet-stream",
            filename=name,
            background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
        )

    @api.get("/dead-letters", dependencies=[admin])
    async def dead_letters(
        request: Request, limit: int = Query(20, ge=1, le=500)
    ) -> dict[str, Any]:
        """Messages the engine could not handle, parked with the reason (peeked, not taken)."""
        transport = context_of(request).runtime.transport
        peek = getattr(transport, "dead_letters", None)
        if peek is None:
            raise ApiProblem(404, "no dead letters here", "this server has no broker")
        found = await peek(limit)
        return {
            "items": [
                {
                    "headers": {str(k): str(v) for k, v in (headers or {}).items()},
                    "body": body.decode("utf-8", errors="replace")[:4000],
                }
                for body, headers in found
            ]
        }

    # -- actions -----------------------------------------------------------------------

    @api.post("/runs/{run}/cancel", status_code=202, dependencies=[run_scope])
    async def cancel(request: Request, run: str) -> dict[str, Any]:
        return {
            "run_id": await context_of(request).runtime.client.cancel(
                run_id_param(run), "cancelled via the API"
            )
        }

    @api.post("/runs/{run}/retry", status_code=202, dependencies=[run_scope])
    async def retry(request: Request, run: str) -> dict[str, Any]:
        state = await context_of(request).runtime.client.retry(run_id_param(run))
        return {"run_id": state.run_id, "round": state.round + 1}

    @api.post("/runs/{run}/resume", status_code=202, dependencies=[run_scope])
    async def resume(request: Request, run: str) -> dict[str, Any]:
        context = context_of(request)
        run_id = await context.runtime.client.resume(
            run_id_param(run), steps_lost=not context.distributed
        )
        return {"run_id": run_id}

    @api.delete("/runs/{run}", dependencies=[admin])
    async def delete(request: Request, run: str) -> dict[str, Any]:
        context = context_of(request)
        run_id = await context.runtime.client.delete(run_id_param(run), context.artifacts)
        return {"run_id": run_id, "deleted": True}

    @api.post("/runs/{run}/signals/{name}", status_code=202, dependencies=[run_scope])
    async def signal(request: Request, run: str, name: str) -> dict[str, Any]:
        raw = await request.body()
        try:
            data = msgspec.json.decode(raw) if raw.strip() else None
        except msgspec.DecodeError:
            raise ApiProblem(400, "bad request", "the body is not JSON") from None
        run_id = await context_of(request).runtime.client.signal(
            run_id_param(run), name_param(name, "signal"), data, sender="api"
        )
        return {"run_id": run_id, "signal": name}

    @api.post("/runs/{run}/tasks/{task}/approve", status_code=202)
    async def approve(
        request: Request, run: str, task: str, caller: Caller = run_scope
    ) -> dict[str, Any]:
        client = context_of(request).runtime.client
        state = await client.state(run_id_param(run))
        node = state.nodes.get(name_param(task, "task"))
        if node is None or node.spec.signal is None:
            raise ApiProblem(404, "no such wait step", f"{task!r} is not a wait step of this run")
        await client.signal(
            state.run_id, node.spec.signal, {"approved": True, "by": caller.name}, sender="api"
        )
        return {"run_id": state.run_id, "task": task, "approved": True}

    return api
