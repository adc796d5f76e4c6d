"""Retention: ended runs older than the period go, with their lines and artifacts;
running runs, younger runs and runs of other states or workflows stay."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import textwrap
import time
import uuid

import msgspec
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from contracts.codec import encode
from contracts.errors import Conflict, ConveyorError, NotFound
from contracts.events import ArtifactRef, RunCompleted, RunSubmitted, TaskSucceeded
from contracts.ports import RunSummary
from contracts.topology import shard_of, shard_queue
from contracts.validation import parse_workflow
from contracts.vocabulary import RunStatus
from conveyor.embedded import EmbeddedEngine
from engine.client import Client
from engine.retention import (
    LONGEST_PAUSE,
    PAGE,
    Retention,
    keep_pruning,
    pause_between,
    prune,
)
from engine.runlog.memory import MemoryRunLog
from tests.engine.draining import shard_drained
from workers.artifacts import FsspecArtifactStore

PRINTS = """
    name: prints
    tasks:
      - name: say
        script: mkdir -p out && echo hello | tee out/said.txt
        artifacts:
          out: {said: out/said.txt}
"""
FAILS = "name: fails\ntasks: [{name: boom, script: echo bad; exit 3}]"
WAITS = "name: waits\ntasks: [{name: hold, wait: {signal: go}}]"


def flow(text: str):  # type: ignore[no-untyped-def]
    return parse_workflow(textwrap.dedent(text))


async def ended(client: Client, text: str) -> str:
    run_id = await client.submit(flow(text), {})
    await client.watch(run_id, timeout=30)
    return run_id


async def test_prune_deletes_ended_runs_past_the_period_and_nothing_else(
    engine: EmbeddedEngine,
) -> None:
    client = engine.client
    succeeded = await ended(client, "name: prints\ntasks: [{name: say, script: echo hello}]")
    failed = await ended(client, FAILS)
    waiting = await client.submit(flow(WAITS), {})
    async for _submitted_now in client.follow(waiting, timeout=30):
        break
    now = time.time()
    assert (await client.state(waiting)).status == RunStatus.RUNNING

    # Nothing has ended an hour ago yet.
    assert (await prune(client, Retention(keep=3600), now)).deleted == 0
    # Of one state only: the failed run goes, the succeeded one stays.
    gone: list[RunSummary] = []
    done = await prune(client, Retention(keep=0, state="failed"), now + 1, deleted=gone.append)
    assert (done.deleted, [row.run_id for row in gone]) == (1, [failed])
    with pytest.raises(NotFound):
        await client.state(failed)
    assert await client.lines(succeeded) != []
    # Of another workflow: nothing.
    assert (await prune(client, Retention(keep=0, workflow="nope"), now + 1)).deleted == 0
    # Everything ended: the succeeded run goes; the waiting one is running and stays.
    assert (await prune(client, Retention(keep=0), now + 1)).deleted == 1
    assert [row.run_id for row in await client.runs()] == [waiting]
    assert await client.store.read_lines(succeeded) == []
    with pytest.raises(Conflict, match="still running"):
        await client.delete(waiting)
    await client.cancel(waiting)
    await client.watch(waiting, timeout=30)
    assert await client.delete(waiting[:8]) == waiting
    assert await client.runs() == []


async def test_a_deleted_runs_artifacts_go_with_it() -> None:
    store = FsspecArtifactStore(f"memory://retention-{uuid.uuid4().hex}")
    async with EmbeddedEngine(artifacts=store) as engine:
        first = await ended(engine.client, PRINTS)
        second = await ended(engine.client, PRINTS)
        said = (await engine.client.state(second)).nodes["say"].artifacts()["said"]
        await engine.client.delete(first, store)
    assert await store.remove(f"runs/{first}") == 0  # nothing of it was left
    assert await store.get_bytes(msgspec.convert(said, ArtifactRef)) == b"hello\n"


async def test_prune_reads_the_index_a_page_at_a_time() -> None:
    """More runs than a page, all expired: every one goes, and the pages are read up
    to the period's start only."""
    log = MemoryRunLog()
    client = Client(log)
    runs = PAGE * 2 + 7
    for n in range(runs):
        run_id = f"r{n:05}"
        await log.append(run_id, [_submitted(run_id, at=float(n))])
        await log.append(run_id, [_completed(run_id, at=float(n) + 0.5)])
    asked: list[float | None] = []
    reading = log.runs

    async def runs_read(**filters):  # type: ignore[no-untyped-def]
        asked.append(filters["until"])
        return await reading(**filters)

    log.runs = runs_read  # type: ignore[method-assign]
    done = await prune(client, Retention(keep=100.0), now=float(runs))
    log.runs = reading  # type: ignore[method-assign]
    assert done.deleted == runs - 100
    assert len(await log.runs(limit=10_000)) == 100
    assert set(asked) == {float(runs) - 100.0} and len(asked) >= 2


async def test_pruners_racing_delete_each_run_once() -> None:
    log = MemoryRunLog()
    client = Client(log)
    for n in range(50):
        await log.append(f"r{n}", [_submitted(f"r{n}", at=1.0)])
        await log.append(f"r{n}", [_completed(f"r{n}", at=2.0)])
    first, second = await asyncio.gather(
        prune(client, Retention(keep=0), 10.0), prune(client, Retention(keep=0), 10.0)
    )
    assert first.deleted + second.deleted == 50
    assert await log.runs() == []


def _submitted(run_id: str, at: float) -> RunSubmitted:
    return RunSubmitted(run_id=run_id, at=at, workflow={"name": "wf"}, params={})


def _completed(run_id: str, at: float) -> RunCompleted:
    return RunCompleted(run_id=run_id, at=at, state="succeeded")


def test_a_server_prunes_a_tenth_of_its_period_apart_within_bounds() -> None:
    assert pause_between(30 * 86400) == LONGEST_PAUSE
    assert pause_between(600) == 60
    assert pause_between(1) == 1


@pytest.mark.parametrize(
    "failure",
    [
        ConveyorError("redis out of reach"),
        RedisConnectionError("refused"),
        sqlite3.OperationalError("database is locked"),
    ],
    ids=["conveyor", "redis", "sqlite"],
)
async def test_a_pruning_that_fails_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """Its store out of reach past its retries, the server's retention goes on, and
    prunes once the store answers."""
    log = MemoryRunLog()
    await log.append("r", [_submitted("r", at=1.0)])
    await log.append("r", [_completed("r", at=2.0)])
    answered = log.runs
    failures = 2
    looked = asyncio.Event()

    async def runs_read(**filters):  # type: ignore[no-untyped-def]
        nonlocal failures
        if failures:
            failures -= 1
            raise failure
        found = await answered(**filters)
        if not found:
            looked.set()
        return found

    log.runs = runs_read  # type: ignore[method-assign]
    monkeypatch.setattr("engine.retention.pause_between", lambda keep: 0.001)
    pruning = asyncio.create_task(keep_pruning(Client(log), Retention(keep=0), clock=lambda: 9.0))
    await asyncio.wait_for(looked.wait(), 10)
    pruning.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pruning
    assert failures == 0 and await answered() == []


async def test_a_late_result_of_a_deleted_run_is_dropped(engine: EmbeddedEngine) -> None:
    """The result of an attempt that outlived its run (redelivered, or from a worker
    that froze) reaches the coordinator after the run was deleted: nothing of the run
    comes back, and the shard goes on."""
    client = engine.client
    run_id = await ended(client, "name: once\ntasks: [{name: a, script: echo 1}]")
    result = next(e for e in await client.events(run_id) if isinstance(e, TaskSucceeded))
    await client.delete(run_id)
    late = msgspec.structs.replace(result, attempt=result.attempt + 1, at=time.time())
    shard = shard_of(run_id, (await client.shard_map()).count)
    await engine.transport.publish(shard_queue(shard), [encode(late)])
    await shard_drained(engine, run_id)
    with pytest.raises(NotFound):
        await engine.store.read(run_id)
    assert await engine.store.summary(run_id) is None
