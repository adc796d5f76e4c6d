"""Event streams end when the server stops, and only then (or with their source)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from conveyor.server.streams import until_stopping


async def test_a_stream_ends_when_the_server_begins_to_stop_and_its_source_is_closed() -> None:
    stopping = asyncio.Event()
    sent: asyncio.Queue[bytes] = asyncio.Queue()
    closed = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        try:
            while True:
                yield await sent.get()
        finally:
            closed.set()

    received: list[bytes] = []

    async def read() -> None:
        async for chunk in until_stopping(source(), stopping):
            received.append(chunk)
            if len(received) == 2:
                stopping.set()

    for chunk in (b"one", b"two", b"three"):
        sent.put_nowait(chunk)
    await asyncio.wait_for(read(), 5)
    assert received == [b"one", b"two"]
    assert closed.is_set()  # the source's wait for more was cancelled, its cleanup ran


async def test_a_stream_whose_source_ends_ends_with_it() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    received = [chunk async for chunk in until_stopping(source(), asyncio.Event())]
    assert received == [b"a", b"b"]


async def test_a_stream_opened_after_the_stop_began_sends_nothing() -> None:
    stopping = asyncio.Event()
    stopping.set()
    never = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        await never.wait()
        yield b"late"

    assert [chunk async for chunk in until_stopping(source(), stopping)] == []


async def test_a_reader_going_away_ends_the_sources_pending_read() -> None:
    closed = asyncio.Event()
    first = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # nothing more for now
            yield b"never"
        finally:
            closed.set()

    async def read() -> None:
        async for _chunk in until_stopping(source(), asyncio.Event()):
            first.set()

    reading = asyncio.ensure_future(read())
    await asyncio.wait_for(first.wait(), 5)
    reading.cancel()  # as when the client disconnects
    await asyncio.gather(reading, return_exceptions=True)
    assert closed.is_set()
