"""A ceiling on what one request may send: a body over it is refused with a 413 as soon as
it is known to be over, never read whole.

The ceiling is the server's (``CONVEYOR_MAX_REQUEST_BYTES``) unless a route sets its own
before it reads the body (``allow_body``): a webhook's is its trigger's ``max_bytes``.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.settings import MAX_REQUEST_BYTES

WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose bodies a route reads. The others are left alone: a page or a stream of
events also calls ``receive``, to learn that its client went away."""

_ROUTE_LIMIT = "conveyor.max_body_bytes"
"""Where a route's own ceiling is kept in the request's scope."""


def allow_body(request: Request, max_bytes: int) -> None:
    """This request's body may be up to ``max_bytes``, whatever the server's ceiling."""
    request.scope[_ROUTE_LIMIT] = max_bytes


class BodyTooLarge(HTTPException):
    """Raised while the body is read, so the route answers 413 however it reads it (a
    form FastAPI parses, or ``request.json()`` in the route)."""

    def __init__(self, size: int | None, limit: int) -> None:
        said = f"{size:,} bytes" if size is not None else "a longer body"
        super().__init__(413, f"body over the limit: {said} (at most {limit:,})")


class BodyLimit:
    """ASGI middleware: counts what the app reads of a body, and stops it past the
    ceiling (at once when the declared length is already over)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        received = 0

        async def bounded() -> Message:
            nonlocal received
            limit: int = scope.get(_ROUTE_LIMIT, self.max_bytes)  # read as the route reads
            if declared is not None and declared > limit:
                raise BodyTooLarge(declared, limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(None, limit)
            return message

        await self.app(scope, bounded, send)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
