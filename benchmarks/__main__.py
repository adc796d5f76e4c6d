"""Conveyor's benchmark suite: ``python -m benchmarks [--json] [--only NAME ...]``.

Starts (or reuses, from ``CONVEYOR_AMQP_URL`` / ``CONVEYOR_REDIS_URL``) RabbitMQ and
Redis like the test fixtures do, runs each benchmark side by side on the same
servers, prints a table, and with ``--json`` prints one JSON object as its last line.

- ``raw_amqp_msgs_per_s``: a raw aio-pika loop, persistent 200-byte messages,
  publisher confirms pipelined 256 deep, prefetch 256, acks: the broker's limit here.
- ``raw_amqp_rtt_p50_ms`` / ``_p99_ms``: ping-pong through two queues, 2,000 trips.
  Both on classic queues; ``raw_amqp_quorum_*`` the same on quorum queues, the kind
  Conveyor declares by default (``CONVEYOR_QUEUE_TYPE``; set it to ``classic`` to run
  the Conveyor benchmarks on classic queues too).
- ``embedded_fanout_10k_tasks_per_s``: 1 -> 10,000 -> 1 no-op Python steps, embedded;
  ``embedded_fanout_10k_async_tasks_per_s`` the same with the 10,000 steps written as
  ``async def`` (run on the worker's event loop, no thread per step);
  ``embedded_fanout_10k_local_home_tasks_per_s`` the plain steps as ``conveyor run``
  runs them, the run kept in a local home's SQLite file instead of in memory.
- ``embedded_script_fanout_1k_tasks_per_s``: 1 -> 1,000 -> 1 script steps (``true``),
  embedded: a process started per step.
- ``fanout_10k_tasks_per_s``: the same on RabbitMQ + Redis (a coordinator in this
  process, two ``conveyor worker --concurrency 4`` processes that have already taken
  work), submit to completion; ``fanout_100k_*`` the same at 100,000 items;
  ``fanout_10k_cold_tasks_per_s`` with the workers started together with the run
  (their start-up, most of a second, included).
- ``chain_100_hop_p50_ms`` / ``_p99_ms``: the same cluster, 100 no-op steps in a chain;
  time from one step's result to the next step's start, from the run log's
  timestamps; percentiles over the hops of three chains.
- ``celery_*``: Celery 5 on the same servers, prefork with one process per core (its
  documented default); ``dramatiq_group_10k_tasks_per_s``: Dramatiq's group of 10,000
  no-ops, one process per core with 8 threads; ``dask_fanout_10k_tasks_per_s``: Dask's
  local threaded scheduler on the same 1 -> 10,000 -> 1 graph.
- ``embedded_child_runs_1k_per_s``: a workflow step over 1,000 items, one child run
  each, embedded; ``embedded_fanout_1k_beside_child_runs_tasks_per_s`` the same items
  as plain tasks, measured alternating with it (``benchmarks/childruns.py``).
- ``webhook_*``, ``bare_fastapi_*``: webhook accept latency against a bare FastAPI
  endpoint, and delivery to first step started (``benchmarks/webhooks.py``).
- ``ui_*``, ``api_*``, ``sse_*``: a 100,000-item run page in Chromium, paging 10,000
  runs through the API, the event stream's lag on a 10,000-item fan-out
  (``benchmarks/ui.py``).
- ``log_page_*_ms``, ``log_whole_task_*_ms``: a page of a 100,000-item task's lines on
  Redis and SQLite, against reading them all (``benchmarks/logpages.py``).
- ``prune_runs_per_s_*``, ``delete_100k_run_*_s``, ``stall_*_ms_*``: deleting ended runs
  on Redis and SQLite, and what deleting a 100,000-item run costs a run going on
  beside it (``benchmarks/retention.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from contracts.events import TaskStarted, TaskSucceeded  # noqa: E402
from contracts.validation import workflow_from_data  # noqa: E402
from conveyor import loop  # noqa: E402
from conveyor.embedded import EmbeddedEngine  # noqa: E402
from conveyor.logsetup import configure_logging  # noqa: E402
from engine.redis_timers import RedisTimers  # noqa: E402
from engine.runlog.redis import RedisRunLog  # noqa: E402
from engine.transport.rabbitmq import RabbitTransport  # noqa: E402


def _size(n: int) -> str:
    """10000 -> ``10k``, 1000000 -> ``1m``: how figures name the size of a run."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def fanout(n: int, items_from: str = "literal", each: str = "benchsteps:noop") -> Any:
    """1 -> n -> 1 no-ops; the items a literal list, ``range(n)`` evaluated by the engine
    (``range``), or the first step's result stored as JSON Lines (``stored``); ``each``
    the function of the n steps."""
    items: Any = {
        "literal": list(range(n)),
        "range": f"{{{{ range({n}) }}}}",
        "stored": "{{ tasks.start.outputs.result }}",
    }[items_from]
    start: dict[str, Any] = {"name": "start", "python": "benchsteps:noop"}
    if items_from == "stored":
        start = {"name": "start", "python": "benchsteps:numbers", "args": {"n": n}}
    return workflow_from_data(
        {
            "name": f"fanout-{n}",
            "tasks": [
                start,
                {
                    "name": "each",
                    "depends": ["start"],
                    "items": items,
                    "python": each,
                    "args": {"i": "{{ item }}"},
                },
                {
                    "name": "end",
                    "depends": ["each"],
                    "python": "benchsteps:count",
                    "args": {"values": "{{ tasks.each.outputs.result }}"},
                },
            ],
        }
    )


def chain(n: int) -> Any:
    tasks = [{"name": "s0", "python": "benchsteps:noop"}]
    tasks += [
        {"name": f"s{i}", "depends": [f"s{i - 1}"], "python": "benchsteps:noop"}
        for i in range(1, n)
    ]
    return workflow_from_data({"name": f"chain-{n}", "tasks": tasks})


async def raw_amqp(url: str, count: int = 20_000) -> dict[str, float]:
    """The broker alone, on classic queues and on quorum queues (Conveyor's default)."""
    connection = await aio_pika.connect(url)
    figures: dict[str, float] = {}
    async with connection:
        for kind, arguments in (("", {}), ("quorum_", {"x-queue-type": "quorum"})):
            rate = await _raw_rate(connection, f"bench.{kind}raw", arguments, count)
            trips = await _raw_trips(connection, f"bench.{kind}", arguments)
            figures[f"raw_amqp_{kind}msgs_per_s"] = rate
            figures[f"raw_amqp_{kind}rtt_p50_ms"] = statistics.median(trips) * 1000
            figures[f"raw_amqp_{kind}rtt_p99_ms"] = trips[int(len(trips) * 0.99)] * 1000
    return figures


async def _declare(channel: Any, name: str, arguments: dict[str, Any]) -> Any:
    # A queue of the other type left by an older suite would refuse the declaration.
    await channel.queue_delete(name)
    return await channel.declare_queue(name, durable=True, arguments=arguments)


async def _raw_rate(connection: Any, name: str, arguments: dict[str, Any], count: int) -> float:
    pub = await connection.channel(publisher_confirms=True)
    sub = await connection.channel()
    await sub.set_qos(prefetch_count=256)
    queue = await _declare(sub, name, arguments)
    body = b"x" * 200
    done = asyncio.Event()
    received = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await message.ack()
        received += 1
        if received == count:
            done.set()

    await queue.consume(on_message)
    started = time.perf_counter()
    window = 256
    for offset in range(0, count, window):
        await asyncio.gather(
            *[
                pub.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=name,
                )
                for _ in range(min(window, count - offset))
            ]
        )
    await done.wait()
    rate = count / (time.perf_counter() - started)
    await pub.close()
    await sub.close()
    return rate


async def _raw_trips(connection: Any, prefix: str, arguments: dict[str, Any]) -> list[float]:
    """Ping-pong through two queues: 2,000 round trips, sorted."""
    pub = await connection.channel(publisher_confirms=True)
    sub = await connection.channel()
    ping = await _declare(sub, f"{prefix}ping", arguments)
    pong = await _declare(sub, f"{prefix}pong", arguments)
    replies: asyncio.Queue[None] = asyncio.Queue()
    body = b"x" * 200

    async def echo(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        await pub.default_exchange.publish(aio_pika.Message(message.body), routing_key=pong.name)

    async def back(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        replies.put_nowait(None)

    await ping.consume(echo)
    await pong.consume(back)
    trips = []
    for _ in range(2000):
        started = time.perf_counter()
        await pub.default_exchange.publish(aio_pika.Message(body), routing_key=ping.name)
        await replies.get()
        trips.append(time.perf_counter() - started)
    await pub.close()
    await sub.close()
    return sorted(trips)


async def embedded_fanout(n: int = 10_000, rounds: int = 3) -> dict[str, float]:
    """Default settings, the median of ``rounds``: the n steps as plain functions (each
    handed to a step thread) and as ``async def`` functions (run on the worker's event
    loop), both with the in-memory log; and the plain ones as ``conveyor run`` runs
    them, on a new local home (its SQLite log and artifact store)."""
    plain = await _embedded_rate(fanout(n), n + 2, rounds)
    on_loop = await _embedded_rate(fanout(n, each="benchsteps:noop_async"), n + 2, rounds)
    at_home = await _embedded_rate(fanout(n), n + 2, rounds, home=True)
    return {
        f"embedded_fanout_{_size(n)}_tasks_per_s": plain,
        f"embedded_fanout_{_size(n)}_async_tasks_per_s": on_loop,
        f"embedded_fanout_{_size(n)}_local_home_tasks_per_s": at_home,
    }


async def _embedded_rate(workflow: Any, tasks: int, rounds: int, *, home: bool = False) -> float:
    """Tasks a second of ``workflow`` run embedded to completion; the median of ``rounds``.

    ``home``: on the engine ``conveyor run`` uses, in a new local home each round."""
    rates = []
    for _ in range(rounds):
        async with _embedded_engine(home) as engine:
            started = time.perf_counter()
            state = await engine.run(workflow, {})
            rates.append(tasks / (time.perf_counter() - started))
        assert state.status == "succeeded", state.reason
    return statistics.median(rates)


@contextlib.asynccontextmanager
async def _embedded_engine(home: bool) -> AsyncIterator[EmbeddedEngine]:
    if not home:
        async with EmbeddedEngine() as engine:
            yield engine
        return
    import tempfile

    from conveyor.local import local_engine
    from conveyor.settings import Settings

    with tempfile.TemporaryDirectory(prefix="conveyor-bench-home-") as directory:
        async with local_engine(Settings(home=Path(directory))) as engine:
            yield engine


async def script_fanout(n: int = 1_000, rounds: int = 3) -> dict[str, float]:
    """1 -> ``n`` -> 1 script steps (``true``), embedded: what starting a process per
    step costs, with the engine's own overhead beside it."""
    workflow = workflow_from_data(
        {
            "name": f"scripts-{n}",
            "tasks": [
                {"name": "start", "script": "true"},
                {"name": "each", "depends": ["start"], "items": list(range(n)), "script": "true"},
                {"name": "end", "depends": ["each"], "script": "true"},
            ],
        }
    )
    rate = await _embedded_rate(workflow, n + 2, rounds)
    return {f"embedded_script_fanout_{_size(n)}_tasks_per_s": rate}


async def python_step_isolation(n: int = 2_000, rounds: int = 3) -> dict[str, float]:
    """What running a blocking Python step in a child process (so its timeout can stop
    it) costs against the in-thread path: the same fan-out, with and without a timeout."""
    rates: dict[str, list[float]] = {"thread": [], "child": []}
    for _ in range(rounds):
        for path, timeout in (("thread", None), ("child", "1h")):
            workflow = fanout(n)
            tasks = [t.model_dump(exclude_unset=True) for t in workflow.tasks]
            if timeout is not None:
                for task in tasks:
                    task["timeout"] = timeout
            workflow = workflow_from_data({"name": f"isolation-{path}", "tasks": tasks})
            async with EmbeddedEngine() as engine:
                started = time.perf_counter()
                state = await engine.run(workflow, {})
                rates[path].append((n + 2) / (time.perf_counter() - started))
            assert state.status == "succeeded", state.reason
    thread = statistics.median(rates["thread"])
    child = statistics.median(rates["child"])
    return {
        "python_step_thread_tasks_per_s": thread,
        "python_step_child_process_tasks_per_s": child,
        "python_step_child_process_cost_us_per_task": (1 / child - 1 / thread) * 1e6,
    }


class CountingTransport(RabbitTransport):
    """Counts the messages this process publishes and receives."""

    published = 0
    received = 0

    async def publish(self, queue: str, bodies: Any, headers: Any = None) -> None:
        CountingTransport.published += len(bodies)
        await super().publish(queue, bodies, headers)

    async def consume(self, queue: str, *, prefetch: int) -> Any:
        return _CountingConsumer(await super().consume(queue, prefetch=prefetch))


class _CountingConsumer:
    """A consumer that counts what it hands out (into ``CountingTransport.received``)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __aiter__(self) -> _CountingConsumer:
        return self

    async def __anext__(self) -> Any:
        delivery = await self._inner.__anext__()
        CountingTransport.received += 1
        return delivery

    def ready(self, limit: int) -> Any:
        deliveries = self._inner.ready(limit)
        CountingTransport.received += len(deliveries)
        return deliveries

    async def drain(self) -> None:
        await self._inner.drain()

    async def reopen(self, prefetch: int) -> None:
        await self._inner.reopen(prefetch)

    async def close(self) -> None:
        await self._inner.close()


@contextlib.asynccontextmanager
async def _cluster(
    amqp_url: str, redis_url: str, *, ready: bool = True
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """A coordinator in this process, two ``conveyor worker --concurrency 4`` processes;
    with ``ready``, yielded once both workers have taken work (a Python process takes
    most of a second to start, which a figure about the engine should not include)."""
    import subprocess
    import tempfile

    from engine.coordinator import Coordinator
    from workers.artifacts import FsspecArtifactStore

    store = RedisRunLog(redis_url)
    await store._redis.flushdb()
    artifacts_dir = tempfile.mkdtemp(prefix="conveyor-bench-artifacts-")
    transport = CountingTransport(
        amqp_url, queue_type=os.environ.get("CONVEYOR_QUEUE_TYPE", "quorum")
    )
    await transport.start()
    env = {
        **os.environ,
        "CONVEYOR_AMQP_URL": amqp_url,
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_LOG_LEVEL": "error",
        "CONVEYOR_SHARDS": "1",
        "CONVEYOR_ARTIFACTS_URL": artifacts_dir,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "--concurrency", "4"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    coordinator = Coordinator(
        transport,
        store,
        shards=1,
        heartbeat_timeout=30,
        timers=lambda fire: RedisTimers(redis_url, fire, time.time),
        artifacts=FsspecArtifactStore(artifacts_dir),
    )
    try:
        await coordinator.start()
        if ready:
            await _workers_ready(coordinator, transport, store, len(workers))
        yield coordinator, transport, store
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
        await coordinator.stop()
        await transport.close()
        await store.close()
        shutil.rmtree(artifacts_dir, ignore_errors=True)


async def distributed_fanout(
    amqp_url: str,
    redis_url: str,
    n: int = 10_000,
    items_from: str = "literal",
    *,
    cold: bool = False,
) -> dict[str, float]:
    """Submit to completion, the workers already up (``cold``: started with the run, the
    figure ``..._cold_tasks_per_s``). The coordinator's peak memory is sampled while the
    run lasts (this process may hold memory from earlier benchmarks: run one size
    alone, ``--only fanout1m``, for a clean figure)."""
    import psutil

    from engine.client import Client

    peak = 0

    async def sample() -> None:
        nonlocal peak
        me = psutil.Process()
        while True:
            peak = max(peak, me.memory_info().rss)
            await asyncio.sleep(0.2)

    async with _cluster(amqp_url, redis_url, ready=not cold) as (coordinator, transport, store):
        info = await store._redis.info("stats")
        ops_before = info["total_commands_processed"]
        published_before = CountingTransport.published
        received_before = CountingTransport.received
        cpu_before = time.process_time()
        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        run_id = await Client(store, transport, shards=1).submit(fanout(n, items_from), {})
        state = await coordinator.wait(run_id)
        took = time.perf_counter() - started
        sampler.cancel()
        cpu = time.process_time() - cpu_before
        info = await store._redis.info("stats")
        ops = info["total_commands_processed"] - ops_before
        # Every message of the run passes through this process: the coordinator
        # publishes the task messages and receives every event and heartbeat.
        messages = (
            CountingTransport.published
            - published_before
            + CountingTransport.received
            - received_before
        )
        assert state.status == "succeeded", state.reason
    tasks = n + 2
    name = f"fanout_{_size(n)}" + ("_stored" if items_from == "stored" else "")
    if cold:
        return {f"{name}_cold_tasks_per_s": tasks / took}
    return {
        f"{name}_tasks_per_s": tasks / took,
        f"{name}_coordinator_peak_rss_mb": peak / (1 << 20),
        f"{name}_coordinator_cpu_us_per_task": cpu / tasks * 1e6,
        f"{name}_redis_ops_per_task": ops / tasks,
        f"{name}_amqp_messages_per_task": messages / tasks,
    }


async def fanout_warm_and_cold(amqp_url: str, redis_url: str) -> dict[str, float]:
    """The 10,000-item fan-out with the workers up, then with them starting."""
    warm = await distributed_fanout(amqp_url, redis_url)
    return {**warm, **await distributed_fanout(amqp_url, redis_url, cold=True)}


async def _workers_ready(coordinator: Any, transport: Any, store: Any, count: int) -> None:
    """Small fan-outs until ``count`` different workers have started its tasks."""
    from engine.client import Client

    client = Client(store, transport, shards=1)
    seen: set[str] = set()
    async with asyncio.timeout(60):
        while len(seen) < count:
            run_id = await client.submit(fanout(32), {})
            await coordinator.wait(run_id)
            seen |= {e.worker for e in await store.read(run_id) if isinstance(e, TaskStarted)}


async def distributed_chain(
    amqp_url: str, redis_url: str, n: int = 100, rounds: int = 3
) -> dict[str, float]:
    """``rounds`` chains of ``n`` on the same cluster as the fan-out; percentiles over all
    their hops (99 hops alone are noisy)."""
    from engine.client import Client

    hops: list[float] = []
    async with _cluster(amqp_url, redis_url) as (coordinator, transport, store):
        for _ in range(rounds):
            run_id = await Client(store, transport, shards=1).submit(chain(n), {})
            state = await coordinator.wait(run_id)
            assert state.status == "succeeded", state.reason
            events = await store.read(run_id)
            done = {e.task: e.at for e in events if isinstance(e, TaskSucceeded)}
            started = {e.task: e.at for e in events if isinstance(e, TaskStarted)}
            hops += [started[f"s{i}"] - done[f"s{i - 1}"] for i in range(1, n)]
    hops.sort()
    return {
        "chain_100_hop_p50_ms": statistics.median(hops) * 1000,
        "chain_100_hop_p99_ms": hops[int(len(hops) * 0.99)] * 1000,
    }


def celery(amqp_url: str, redis_url: str, concurrency: int | None = None) -> dict[str, float]:
    """Celery 5: a chord over 10,000 no-ops, and a chain of 100, on the same servers.

    Prefork with one process per core, as Celery's documentation advises (its default).
    """
    concurrency = concurrency or os.cpu_count() or 1
    import subprocess

    from celery import chain as celery_chain
    from celery import chord, group

    redis_db1 = redis_url.rsplit("/", 1)[0] + "/1"
    env = {**os.environ, "BENCH_AMQP_URL": amqp_url, "BENCH_REDIS_URL": redis_db1}
    os.environ.update({"BENCH_AMQP_URL": amqp_url, "BENCH_REDIS_URL": redis_db1})
    import celery_app

    celery_app.app.conf.broker_url = amqp_url
    celery_app.app.conf.result_backend = redis_db1
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--loglevel=warning",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "-Q",
            "bench.celery",
        ],
        cwd=Path(__file__).resolve().parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not celery_app.app.control.ping(timeout=1.0):
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery worker did not start")
        n = 10_000
        started = time.perf_counter()
        result = chord(
            group(celery_app.noop.s(i) for i in range(n)), celery_app.total.s()
        ).apply_async()
        assert result.get(follow_parents=False, timeout=600) == n
        chord_rate = (n + 1) / (time.perf_counter() - started)
        hops = []
        for _ in range(3):  # the median of three chains, as for Conveyor's
            started = time.perf_counter()
            chained = celery_chain(*[celery_app.noop.si(i) for i in range(100)]).apply_async()
            chained.get(timeout=300)
            hops.append((time.perf_counter() - started) / 100)
        hop = statistics.median(hops)
        # Results hold a Redis subscription; let them go while Redis is still up.
        del result, chained
        gc.collect()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return {"celery_chord_10k_tasks_per_s": chord_rate, "celery_chain_100_hop_p50_ms": hop * 1000}


def dask_fanout(n: int = 10_000, rounds: int = 3) -> dict[str, float]:
    """Dask's local (threaded) scheduler on the same 1 -> n -> 1 graph of no-ops."""
    import dask
    from benchsteps import count, noop

    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        start = dask.delayed(noop)(0)
        each = [dask.delayed(noop)(i, dask_key_name=f"each-{i}") for i in range(n)]
        end = dask.delayed(count)(each, dask_key_name="end")
        (result,) = dask.compute(end, start, scheduler="threads")[:1]
        assert result == n
        rates.append((n + 2) / (time.perf_counter() - started))
    return {f"dask_fanout_{_size(n)}_tasks_per_s": statistics.median(rates)}


def dramatiq_group(amqp_url: str, redis_url: str, n: int = 10_000) -> dict[str, float]:
    """Dramatiq: a group of n no-ops on the same servers, waited for through its results
    backend; one worker process per core with its default 8 threads."""
    import subprocess

    redis_db2 = redis_url.rsplit("/", 1)[0] + "/2"
    env = {**os.environ, "BENCH_AMQP_URL": amqp_url, "BENCH_REDIS_URL": redis_db2}
    os.environ.update({"BENCH_AMQP_URL": amqp_url, "BENCH_REDIS_URL": redis_db2})
    import dramatiq_app
    from dramatiq import group

    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "dramatiq_app", "--processes",
         str(os.cpu_count() or 1), "--threads", "8", "--queues", "bench_dramatiq"],
        cwd=Path(__file__).resolve().parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        warm = dramatiq_app.noop.send(0)  # the worker is up once this comes back
        warm.get_result(block=True, timeout=60_000)
        started = time.perf_counter()
        batch = group(dramatiq_app.noop.message(i) for i in range(n)).run()
        batch.wait(timeout=600_000)
        rate = n / (time.perf_counter() - started)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        dramatiq_app.broker.close()
    return {f"dramatiq_group_{_size(n)}_tasks_per_s": rate}


async def main(args: argparse.Namespace) -> dict[str, float]:
    configure_logging("error", "console")
    results: dict[str, float] = {}
    if not args.only or "embedded" in args.only:
        # Embedded mode needs no servers: measured before any are started.
        print("running embedded ...", file=sys.stderr, flush=True)
        results.update(await embedded_fanout())
    if not args.only or "dask" in args.only:
        print("running dask ...", file=sys.stderr, flush=True)
        results.update(dask_fanout())
    if not args.only or "isolation" in args.only:
        print("running isolation ...", file=sys.stderr, flush=True)
        results.update(await python_step_isolation())
    if not args.only or "scripts" in args.only:
        print("running scripts ...", file=sys.stderr, flush=True)
        results.update(await script_fanout())
    if not args.only or "childruns" in args.only:
        import childruns

        print("running childruns ...", file=sys.stderr, flush=True)
        results.update(await childruns.child_runs())
    if not args.only or "webhooks" in args.only:
        import webhooks

        print("running webhooks ...", file=sys.stderr, flush=True)
        results.update(await webhooks.accept_latency())
        results.update(await webhooks.to_first_task_embedded())
    if not args.only or "ui" in args.only:
        import ui

        print("running ui ...", file=sys.stderr, flush=True)
        results.update(await ui.api_pages())
        results.update(await ui.sse_lag())
        results.update(await ui.run_page_100k())
        results.update(await ui.run_page(1_000_000))
    if args.only and set(args.only) <= set(WITHOUT_SERVERS):
        return results
    amqp_url = os.environ.get("CONVEYOR_AMQP_URL")
    redis_url = os.environ.get("CONVEYOR_REDIS_URL")
    services = None
    if not (amqp_url and redis_url):
        from tests.services import Services

        services = Services()
        amqp_url = amqp_url or services.amqp_url()
        redis_url = redis_url or services.redis_url()
    benches: dict[str, Callable[[], Awaitable[dict[str, float]]]] = {
        "raw": lambda: raw_amqp(amqp_url),
        "fanout": lambda: fanout_warm_and_cold(amqp_url, redis_url),
        "fanout100k": lambda: distributed_fanout(amqp_url, redis_url, 100_000),
        "fanout1m": lambda: distributed_fanout(amqp_url, redis_url, 1_000_000, "range"),
        "fanout1m_stored": lambda: distributed_fanout(amqp_url, redis_url, 1_000_000, "stored"),
        "chain": lambda: distributed_chain(amqp_url, redis_url),
        "celery": lambda: asyncio.to_thread(celery, amqp_url, redis_url),
        "dramatiq": lambda: asyncio.to_thread(dramatiq_group, amqp_url, redis_url),
        "webhooks_distributed": lambda: _webhooks_distributed(amqp_url, redis_url),
        "logpages": lambda: _log_pages(redis_url),
        "retention": lambda: _retention(redis_url),
    }
    try:
        for name, bench in benches.items():
            if args.only and name not in args.only:
                continue
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.update(await bench())
    finally:
        if services is not None:
            services.close()
    return results


async def _webhooks_distributed(amqp_url: str, redis_url: str) -> dict[str, float]:
    import webhooks

    return await webhooks.to_first_task_distributed(amqp_url, redis_url)


async def _log_pages(redis_url: str) -> dict[str, float]:
    import logpages

    return await logpages.log_pages(redis_url)


async def _retention(redis_url: str) -> dict[str, float]:
    import retention

    return await retention.retention(redis_url)


WITHOUT_SERVERS = ("embedded", "dask", "isolation", "scripts", "childruns", "webhooks", "ui")
"""Sections that need no RabbitMQ or Redis (run first, before any is started)."""

SECTIONS = (
    *WITHOUT_SERVERS,
    "raw",
    "fanout",
    "fanout100k",
    "fanout1m",
    "fanout1m_stored",
    "chain",
    "celery",
    "dramatiq",
    "webhooks_distributed",
    "logpages",
    "retention",
)
"""What ``--only`` may name, in the order they run."""

Target = tuple[str, float, str, str | float, float]
"""(name, scale, numerator, denominator, needed): met when
``scale * figures[numerator] / denominator >= needed`` (a denominator is a figure's
name or a number)."""

TARGETS: list[Target] = [
    ("fanout_10k_vs_raw_1_5x", 1, "fanout_10k_tasks_per_s", "raw_amqp_msgs_per_s", 1.5),
    ("fanout_10k_vs_celery", 1, "fanout_10k_tasks_per_s", "celery_chord_10k_tasks_per_s", 3),
    ("fanout_10k_vs_dramatiq", 1, "fanout_10k_tasks_per_s", "dramatiq_group_10k_tasks_per_s", 1),
    ("chain_hop_vs_celery", 1, "celery_chain_100_hop_p50_ms", "chain_100_hop_p50_ms", 1),
    ("chain_hop_p50_within_1_5x_raw", 1.5, "raw_amqp_rtt_p50_ms", "chain_100_hop_p50_ms", 1),
    ("chain_hop_p99_within_3x_raw", 3, "raw_amqp_rtt_p99_ms", "chain_100_hop_p99_ms", 1),
    # The same rules against the broker on the kind of queue Conveyor's run on.
    (
        "fanout_10k_vs_raw_quorum_1_5x",
        1,
        "fanout_10k_tasks_per_s",
        "raw_amqp_quorum_msgs_per_s",
        1.5,
    ),
    (
        "chain_hop_p50_within_1_5x_raw_quorum",
        1.5,
        "raw_amqp_quorum_rtt_p50_ms",
        "chain_100_hop_p50_ms",
        1,
    ),
    (
        "chain_hop_p99_within_3x_raw_quorum",
        3,
        "raw_amqp_quorum_rtt_p99_ms",
        "chain_100_hop_p99_ms",
        1,
    ),
    ("fanout_100k_vs_10k", 1, "fanout_100k_tasks_per_s", "fanout_10k_tasks_per_s", 0.8),
    ("fanout_100k_rss_headroom", 400, "one", "fanout_100k_coordinator_peak_rss_mb", 1),
    ("fanout_1m_vs_10k", 1, "fanout_1m_tasks_per_s", "fanout_10k_tasks_per_s", 0.8),
    ("fanout_1m_rss_under_1gb", 1024, "one", "fanout_1m_coordinator_peak_rss_mb", 1),
    ("fanout_1m_stored_vs_10k", 1, "fanout_1m_stored_tasks_per_s", "fanout_10k_tasks_per_s", 0.8),
    (
        "fanout_1m_stored_rss_under_1gb",
        1024,
        "one",
        "fanout_1m_stored_coordinator_peak_rss_mb",
        1,
    ),
    ("embedded_vs_15000", 1, "embedded_fanout_10k_tasks_per_s", 15000, 1),
    ("embedded_vs_dask", 1, "embedded_fanout_10k_tasks_per_s", "dask_fanout_10k_tasks_per_s", 1),
    ("webhook_accept_p50_vs_bare", 2, "bare_fastapi_p50_ms", "webhook_accept_p50_ms", 1),
    ("webhook_accept_p99_under_25ms", 25, "one", "webhook_accept_p99_ms", 1),
    ("webhook_to_task_under_50ms", 50, "one", "webhook_to_task_p50_ms", 1),
    (
        "webhook_to_task_distributed_under_50ms",
        50,
        "one",
        "webhook_to_task_distributed_p50_ms",
        1,
    ),
    ("ui_run_page_100k_under_1s", 1000, "one", "ui_run_page_100k_ms", 1),
    ("ui_run_page_1m_under_1s", 1000, "one", "ui_run_page_1m_ms", 1),
    ("api_runs_page_p99_under_50ms", 50, "one", "api_runs_page_p99_ms", 1),
    ("sse_lag_under_1s", 1000, "one", "sse_lag_10k_max_ms", 1),
]


def check_targets(figures: dict[str, float]) -> list[tuple[str, str, float, bool]]:
    """The targets whose figures this run measured: (name, rule, ratio, met)."""
    known = {**figures, "one": 1.0}
    out = []
    for name, scale, numerator, denominator, needed in TARGETS:
        below = denominator if isinstance(denominator, int | float) else known.get(denominator)
        if numerator not in known or below is None:
            continue  # a benchmark left out with --only
        value = scale * known[numerator] / below
        top = numerator if scale == 1 else ("" if numerator == "one" else f"{scale:g} x ")
        top = (
            f"{scale:g}" if numerator == "one" else f"{top}{numerator}" if scale != 1 else numerator
        )
        out.append((name, f"{top} / {denominator} >= {needed:g}", value, value >= needed))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--json", action="store_true", help="End with one JSON object of the figures."
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only these sections (space-separated): {', '.join(SECTIONS)}",
    )
    began = time.monotonic()
    figures = loop.run(main(parser.parse_args()))
    print(f"benchmarks took {time.monotonic() - began:.0f} s", file=sys.stderr)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:12.1f}")
    targets = check_targets(figures)
    if targets:
        print("\ntargets (ratios within this run):")
        for name, rule, value, met in targets:
            print(f"  {'met    ' if met else 'NOT MET'}  {value:6.2f}  {rule}")
            figures[name] = value
    if "--json" in sys.argv:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
