"""Who may call the API, and how its errors read: token checks by scope (bearer header,
or the UI's cookie for reading), id and name checks, problem documents."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from contracts.errors import Conflict, InvalidInput, NotFound
from contracts.ports import ArtifactStore, LogPosition
from conveyor.server.auth import Caller, Scope, Tokens
from conveyor.server.runtime import TriggerRuntime

RUN_ID = re.compile(r"^[0-9a-f]{4,32}$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
LOG_POSITION = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]{0,62}):(\d{1,12}):(\d{1,6}):(\d{1,9})$")


class ApiProblem(Exception):
    def __init__(self, status: int, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail


@dataclass
class ApiContext:
    runtime: TriggerRuntime
    tokens: Tokens
    open: bool
    """No token needed (embedded, loopback, no token made)."""
    distributed: bool
    artifacts: ArtifactStore | None


def context_of(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.api
    return context


def needs(scope: Scope) -> Any:
    async def check(request: Request) -> Caller:
        context = context_of(request)
        if context.open:
            return Caller("open", Scope.ADMIN)
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
        from_cookie = False
        if not presented:
            presented = request.cookies.get("conveyor_token", "")
            from_cookie = bool(presented)
        if not presented:
            raise ApiProblem(401, "authentication required", "send Authorization: Bearer TOKEN")
        if from_cookie and request.method != "GET" and "x-conveyor-ui" not in request.headers:
            # A cookie alone never steers a run: another site could make the browser send it.
            raise ApiProblem(403, "forbidden", "actions need the UI's header or a bearer token")
        caller = await context.tokens.check(presented)
        if caller is None:
            raise ApiProblem(401, "invalid token", "unknown, malformed or revoked token")
        if caller.scope < scope:
            raise ApiProblem(
                403,
                "insufficient scope",
                f"needs {scope.name.lower()}, token has {caller.scope.name.lower()}",
            )
        return caller

    return Depends(check)


def run_id_param(run: str) -> str:
    if not RUN_ID.match(run):
        raise ApiProblem(404, "no such run", "a run id is 4 to 32 hexadecimal digits")
    return run


def log_position_param(after: str) -> LogPosition | None:
    """``after`` of a log page: empty (or ``0``) for the first page, else the
    ``next_after`` of the page before, ``task:item:attempt:lines``."""
    if after in ("", "0"):
        return None
    found = LOG_POSITION.match(after)
    if found is None:
        raise ApiProblem(
            400, "bad request", f"after={after!r} is not the next_after of a page of logs"
        )
    task, item, attempt, read = found.groups()
    return task, int(item), int(attempt), int(read)


def log_position_text(position: LogPosition | None) -> str | None:
    return None if position is None else ":".join(str(part) for part in position)


def name_param(value: str, what: str) -> str:
    if not NAME.match(value):
        raise ApiProblem(404, f"no such {what}", f"{value!r} is not a {what} name")
    return value


def problem_of(exc: Exception) -> tuple[int, str, str]:
    """Status, title and detail of an error raised under a request."""
    if isinstance(exc, ApiProblem):
        return exc.status, exc.title, exc.detail
    if isinstance(exc, NotFound):
        return 404, "not found", str(exc)
    if isinstance(exc, Conflict):
        return 409, "conflict", str(exc)
    if isinstance(exc, InvalidInput):
        return 400, "invalid input", str(exc)
    return 500, "internal error", ""
