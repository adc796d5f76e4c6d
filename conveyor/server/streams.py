"""Server-Sent Events streams that end when the server stops.

An event or log stream runs until its run ends, which may be hours. A stopping server
would otherwise wait for every open page's streams, then cut them off mid-chunk. Ended
cleanly instead, a browser's EventSource reconnects by itself and resumes after the
last id it had, on another replica or on this server once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse


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
