"""A distributed Conveyor of real processes on real RabbitMQ and Redis, for failure tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika

from contracts.events import Event, TaskSucceeded
from contracts.topology import DEAD_LETTER_QUEUE, shard_queue, task_queue
from contracts.validation import parse_workflow, resolve_params
from engine.client import Client
from engine.runlog.redis import RedisRunLog
from engine.state import replay
from engine.state.model import RunState
from engine.transport.rabbitmq import RabbitTransport
from tests.amqp import amqp_channel
from tests.services import start_logging_to

SHARDS = 2
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HEARTBEAT_TIMEOUT = 1.5


class Cluster:
    def __init__(self, amqp_url: str, redis_url: str, workdir: Path) -> None:
        self.amqp_url = amqp_url
        self.redis_url = redis_url
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.store = RedisRunLog(redis_url)
        self.env = {
            **os.environ,
            "CONVEYOR_AMQP_URL": amqp_url,
            "CONVEYOR_REDIS_URL": redis_url,
            "CONVEYOR_SHARDS": str(SHARDS),
            "CONVEYOR_HEARTBEAT_INTERVAL": "0.2",
            "CONVEYOR_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "CONVEYOR_WAKE_INTERVAL": "0.5",
            "CONVEYOR_SHARD_WATCH_INTERVAL": "0.5",
            "CONVEYOR_AMQP_HEARTBEAT": "1",
            "CONVEYOR_LOG_LEVEL": os.environ.get("CONVEYOR_LOG_LEVEL", "info"),
            "PYTHONUNBUFFERED": "1",
            # Python steps of the examples import their module by name.
            "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(ROOT)]),
        }

    async def reset(self) -> None:
        """Empty the broker's and Redis's Conveyor state left by earlier tests."""
        async with amqp_channel(self.amqp_url) as channel:
            for name in [
                *(shard_queue(s) for s in range(8)),  # (more if a test resharded)
                task_queue("default"),
                DEAD_LETTER_QUEUE,
            ]:
                await channel.queue_delete(name)
        await self.store._redis.flushdb()

    def _spawn(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        proc = start_logging_to(
            self.workdir / f"{name}-{len(self.procs)}.log",
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.workdir,
            env=self.env,
        )
        self.procs.append(proc)
        return proc

    def coordinator(self) -> subprocess.Popen[bytes]:
        return self._spawn("coordinator", name="coordinator")

    async def wait_for_shard_consumers(
        self, count: int, timeout: float = 30, shards: int = SHARDS
    ) -> None:
        """Until each of ``shards`` shard queues has ``count`` consumers registered (with
        a single active consumer per queue, the first one registered is the active one)."""
        deadline = time.monotonic() + timeout
        async with await aio_pika.connect(self.amqp_url) as connection:
            while True:
                counts = []
                for shard in range(shards):
                    # A channel each: a passive declare of a missing queue closes its channel.
                    with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                        async with connection.channel() as channel:
                            queue = await channel.declare_queue(shard_queue(shard), passive=True)
                            counts.append(queue.declaration_result.consumer_count or 0)
                if len(counts) == shards and min(counts) >= count:
                    return
                assert time.monotonic() < deadline, f"shard consumers {counts}, wanted {count}"
                await asyncio.sleep(0.05)

    def worker(self, concurrency: int = 2, grace: float = 10.0) -> subprocess.Popen[bytes]:
        return self._spawn(
            "worker", "--concurrency", str(concurrency), "--grace", str(grace), name="worker"
        )

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        """The client every command goes through, on this cluster."""
        transport = RabbitTransport(self.amqp_url)
        await transport.start()
        try:
            yield Client(self.store, transport, shards=SHARDS)
        finally:
            await transport.close()

    async def submit(self, yaml_text: str, **params: Any) -> str:
        workflow = parse_workflow(textwrap.dedent(yaml_text))
        async with self.client() as client:
            return await client.submit(workflow, resolve_params(workflow, params))

    async def events(self, run_id: str) -> list[Event]:
        try:
            return await self.store.read(run_id)
        except Exception:
            return []

    async def wait_until(
        self, run_id: str, condition: Callable[[list[Event]], bool], timeout: float, what: str
    ) -> list[Event]:
        """Poll the run's log until ``condition`` holds; fail with the log tail if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            events = await self.events(run_id)
            if condition(events):
                return events
            if time.monotonic() > deadline:
                tail = "\n".join(f"  {e.kind} {getattr(e, 'task', '')}" for e in events[-15:])
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; log tail:\n{tail}"
                )
            await asyncio.sleep(0.05)

    async def finished(self, run_id: str, timeout: float = 60) -> RunState:
        events = await self.wait_until(
            run_id,
            lambda ev: bool(ev) and replay(ev).finished,
            timeout,
            "the run to complete",
        )
        return replay(events, strict=True)

    @staticmethod
    def signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        os.killpg(proc.pid, sig)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process and everything it started (its step subprocesses too)."""
        self.signal(proc, signal.SIGKILL)
        proc.wait(timeout=10)

    async def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        await self.store.close()


def started(task: str, index: int = 0, attempt: int = 1) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        e.kind == "task_started"
        and getattr(e, "task", None) == task
        and getattr(e, "index", 0) == index
        and getattr(e, "attempt", 0) == attempt
        for e in events
    )


def succeeded_count(events: list[Event], task: str) -> int:
    return sum(1 for e in events if e.kind == "task_succeeded" and getattr(e, "task", None) == task)


def assert_one_success_in_state(state: RunState, events: list[Event], task: str) -> None:
    """Each item of ``task`` succeeded exactly once in the state.

    The log may also hold a late success of a superseded attempt (a worker that was
    cut off and declared lost, then reported): recorded for the record, ignored by
    the state. Never two successes of the same attempt.
    """
    successes = [e for e in events if isinstance(e, TaskSucceeded) and e.task == task]
    keys = [(e.index, e.attempt) for e in successes]
    assert len(keys) == len(set(keys)), f"a success of {task} was appended twice"
    for index, inst in enumerate(state.nodes[task].instances):
        assert inst.status == "succeeded"
        assert (index, inst.attempt) in keys
