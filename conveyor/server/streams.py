"""Server-Sent Events streams that end when the server stops.

An event or log stream runs until its run ends, which may be hours. A stopping server
would otherwise wait for every open page's streams, then cut them off mid-chunk. Ended
cleanly instead, a browser's EventSource reconnects by itself and resumes after the
last id it had, on another replica or on this server once it is back.

A log stream reads each line once (``engine.logfollow``): what is stored when it opens,
page by page, then only what the attempts still running add, however big the task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from fastapi.responses import StreamingResponse

from contracts.codec import to_builtins
from contracts.ports import LogLine
from engine.client import Client

CHANGES_EVERY = 0.25
"""Seconds between ``changes`` events: a page redraws at most every 0.3 s anyway."""


def sse_response(chunks: AsyncIterator[bytes], stopping: asyncio.Event) -> StreamingResponse:
    return StreamingResponse(until_stopping(chunks, stopping), media_type="text/event-stream")


async def until_stopping(
    chunks: AsyncIterator[bytes], stopping: asyncio.Event
) -> AsyncIterator[bytes]:
    """``chunks`` until they end or ``stopping`` is set, whichever comes first.

    Each chunk is awaited in a task of its own (to be cancelled when the stop comes),
    so the streams yield a chunk per read, not per line.
    """
    stopped = asyncio.ensure_future(stopping.wait())
    following: asyncio.Future[bytes] | None = None
    try:
        while not stopping.is_set():
            following = asyncio.ensure_future(anext(chunks))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.is_set():
                return
            try:
                chunk = following.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        # Also when the reader went away: the source's pending read is cancelled, which
        # runs its clean-up.
        stopped.cancel()
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following


async def log_lines(
    client: Client,
    run_id: str,
    task: str | None,
    index: int | None,
    *,
    resumed: int,
    every: float,
    gone: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """A run's lines (of one task, of one item) as Server-Sent Events until the run ends,
    then an ``end`` event. ``every``: seconds between looks for new lines; ``gone`` says
    whether the reader has left.

    The last line of each read carries an id: a count of the run's events, all of whose
    ended attempts the lines sent so far hold whole (``LineFollower.answered``). A reader
    that comes back with it (``resumed``, from Last-Event-ID) is sent every line but
    those attempts': none is lost, and only the lines sent before of attempts running
    then come again.
    """

    def as_events(lines: list[LogLine], last_id: int | None) -> bytes:
        chunk = bytearray()
        for position, line in enumerate(lines, start=1):
            if position == len(lines) and last_id is not None:
                chunk += f"id: {last_id}\n".encode()
            chunk += b"data: " + msgspec.json.encode(line) + b"\n\n"
        return bytes(chunk)

    reads = client.follow_lines(run_id, task, index, every=every, had=resumed)
    async with contextlib.aclosing(reads):
        async for read in reads:
            if chunk := as_events(read.lines, read.answered):
                yield chunk
            if await gone():
                return
    yield b"event: end\ndata: {}\n\n"


async def run_events(
    client: Client,
    run_id: str,
    after: int,
    *,
    every: float | None,
    gone: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """A run's events after the first ``after`` as Server-Sent Events, each with its
    position as its id, until ``run_completed``.

    With ``every``, the events read together go as one ``changes`` event (their count
    and kinds, the last one's position as its id), at most one each ``every`` seconds:
    a page that redraws itself when something changed needs no more, and a fan-out
    running at thousands of tasks a second appends tens of thousands of events a second.
    """
    position = after
    async for batch in client.follow(run_id, after):
        chunk = bytearray()
        ended = next((e for e in batch if e.kind == "run_completed"), None)
        if ended is not None:
            batch = batch[: batch.index(ended) + 1]
        if every is None:
            for event in batch:
                position += 1
                chunk += (
                    f"id: {position}\nevent: {event.kind}\ndata: ".encode()
                    + msgspec.json.encode(to_builtins(event))
                    + b"\n\n"
                )
        else:
            position += len(batch)
            kinds = sorted({event.kind for event in batch})
            summary = {"count": len(batch), "kinds": kinds}
            chunk += f"id: {position}\nevent: changes\ndata: ".encode()
            chunk += msgspec.json.encode(summary) + b"\n\n"
            if ended is not None:
                chunk += (
                    b"event: run_completed\ndata: "
                    + msgspec.json.encode(to_builtins(ended))
                    + b"\n\n"
                )
        yield bytes(chunk)
        if ended is not None or await gone():
            return
        if every is not None:
            await asyncio.sleep(every)
