"""A webhook sender for the soak tests: HTTP/1.1 POSTs over a few kept-alive asyncio
connections, light enough to leave the machine's cores to the servers under test."""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Answer:
    def __init__(self, status: int, content: bytes) -> None:
        self.status_code = status
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


class Poster:
    """At most ``connections`` requests in flight; each waits its turn for a connection."""

    def __init__(self, url: str, connections: int = 8, timeout: float = 10) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.free: asyncio.Queue[Connection | None] = asyncio.Queue()
        for _ in range(connections):
            self.free.put_nowait(None)  # opened when first needed

    async def __aenter__(self) -> Poster:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        while not self.free.empty():
            if (conn := self.free.get_nowait()) is not None:
                conn[1].close()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        conn = await self.free.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            answer, reusable = await asyncio.wait_for(
                self._exchange(conn, path, body, headers), self.timeout
            )
            if not reusable:
                conn[1].close()
                conn = None
            return answer
        except BaseException:
            if conn is not None:
                conn[1].close()
            conn = None
            raise
        finally:
            self.free.put_nowait(conn)

    async def _exchange(
        self, conn: Connection, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[Answer, bool]:
        reader, writer = conn
        lines = [f"POST {path} HTTP/1.1", f"host: {self.host}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        # Not drained before the answer is read: a server may refuse a body (413) on its
        # length alone, without reading it.
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection before answering")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "connection":
                close = value.strip().lower() == "close"
        content = await reader.readexactly(length)
        # After a refusal, part of the body may still be unsent or unread: start afresh.
        return Answer(status, content), not close and status < 400
