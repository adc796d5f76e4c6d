"""Webhook figures, side by side on one machine.

- ``webhook_accept_p50_ms`` / ``_p99_ms``: signed GitHub-style deliveries at 200 a
  second (open loop, 10 s) to ``conveyor server`` (embedded, each delivery starting a
  run of one no-op Python step in that same process); ``bare_fastapi_p50_ms`` /
  ``_p99_ms``: the same load on a bare FastAPI endpoint answering 202 on the same
  uvicorn, in its own process, just before.
- ``webhook_to_task_p50_ms`` / ``_p99_ms`` (embedded) and ``..._distributed_...``:
  from sending a delivery to its run's first step starting (the step's ``TaskStarted``
  time in the run log), one delivery at a time, 60 of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench secret"
HOOKED = """
name: hooked
params: {n: {type: int}}
tasks: [{name: a, python: "benchsteps:noop"}]
triggers:
  - name: push
    webhook: {preset: github, secret_env: BENCH_SECRET, params: {n: "body['n']"}}
"""
BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
app = FastAPI()
@app.post("/hooks/{workflow}/{trigger}", status_code=202)
async def hook(workflow: str, trigger: str, request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"status": "accepted"}, status_code=202)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signed(n: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"n": n}).encode()
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "X-Hub-Signature-256": f"sha256={mac}",
        "X-GitHub-Delivery": f"bench-{n}-{time.monotonic_ns()}",
        "Content-Type": "application/json",
    }


@contextlib.contextmanager
def _process(
    args: list[str], port: int, env: dict[str, str], cwd: Path, probe: str = "GET /healthz"
) -> Iterator[str]:
    """The server ``args`` start, once ``probe`` (method and path) is answered.

    What it says goes to a file (a pipe nobody reads could fill and stall it), and is
    shown if it exits or does not start."""
    method, path = probe.split(" ", 1)
    with tempfile.TemporaryFile() as said:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=said)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=0.5)
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        said.seek(0)
                        last = said.read().decode(errors="replace").strip().splitlines()[-20:]
                        how = "exited" if proc.poll() is not None else "did not start in 30 s"
                        raise RuntimeError(f"{' '.join(args)} {how}:\n" + "\n".join(last)) from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


_ENGINE_ADDRESSES = ("CONVEYOR_AMQP_URL", "CONVEYOR_REDIS_URL")


def server_env(**extra: str) -> dict[str, str]:
    """A benchmarked server's environment: the suite's, without the broker and log it may
    have been given (``CONVEYOR_AMQP_URL`` set for the distributed figures would make an
    embedded server a front end to an engine with no coordinator); ``extra`` sets them
    again."""
    inherited = {k: v for k, v in os.environ.items() if k not in _ENGINE_ADDRESSES}
    return {
        **inherited,
        "BENCH_SECRET": SECRET,
        "CONVEYOR_LOG_LEVEL": "error",
        "CONVEYOR_PYTHON_PATH": str(Path(__file__).resolve().parent),
        **extra,
    }


@contextlib.contextmanager
def server(home: Path, **env: str) -> Iterator[str]:
    (home / "flows").mkdir(exist_ok=True)
    (home / "flows" / "hooked.yaml").write_text(HOOKED)
    port = _port()
    args = [sys.executable, "-m", "conveyor", "server", "--workflows", "flows", "--port", str(port)]
    environment = server_env(CONVEYOR_HOME=str(home / ".conveyor"), **env)
    with _process(args, port, environment, home) as url:
        yield url


async def _load(url: str, rate: float, seconds: float) -> list[float]:
    """Open-loop load: a delivery every 1/rate s whatever the answers; each latency."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def one(n: int) -> None:
            body, headers = signed(n)
            began = time.perf_counter()
            answer = await http.post("/hooks/hooked/push", content=body, headers=headers)
            latencies.append(time.perf_counter() - began)
            assert answer.status_code == 202, answer.text

        for n in range(20):  # warm up connections and code paths
            await one(-1 - n)
        latencies.clear()
        start = time.perf_counter()
        sent: list[asyncio.Task[None]] = []
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            sent.append(asyncio.create_task(one(n)))
        await asyncio.gather(*sent)
    return sorted(latencies)


def _percentiles(name: str, values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        f"{name}_p50_ms": statistics.median(values) * 1000,
        f"{name}_p99_ms": values[int(len(values) * 0.99)] * 1000,
    }


async def accept_latency(rate: float = 200, seconds: float = 10) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        port = _port()
        bare = [sys.executable, "-c", BARE_APP + "\n", str(port)]
        # The bare app has no /healthz: it is up once it answers a webhook.
        with _process(bare, port, dict(os.environ), Path(scratch), "POST /hooks/a/b") as url:
            figures.update(_percentiles("bare_fastapi", await _load(url, rate, seconds)))
        with server(Path(scratch)) as url:
            figures.update(_percentiles("webhook_accept", await _load(url, rate, seconds)))
    figures["webhook_accept_vs_bare_p50"] = (
        figures["webhook_accept_p50_ms"] / figures["bare_fastapi_p50_ms"]
    )
    return figures


async def _to_first_task(url: str, store: Any, count: int) -> list[float]:
    from contracts.events import TaskStarted

    delays = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for n in range(count):
            body, headers = signed(n)
            sent = time.time()
            answer = await http.post("/hooks/hooked/push", content=body, headers=headers)
            run_id = answer.json()["run_id"]
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(Exception):
                    started = [e for e in await store.read(run_id) if isinstance(e, TaskStarted)]
                    if started:
                        delays.append(started[0].at - sent)
                        break
                assert time.monotonic() < deadline, "the run's step did not start"
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.05)
    return delays[5:]  # the first ones start the worker pool


async def to_first_task_embedded(count: int = 60) -> dict[str, float]:
    from engine.runlog.sqlite import SqliteRunLog

    with tempfile.TemporaryDirectory() as scratch, server(Path(scratch)) as url:
        store = SqliteRunLog(Path(scratch) / ".conveyor" / "conveyor.db")
        try:
            return _percentiles("webhook_to_task", await _to_first_task(url, store, count))
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def _distributed_engine(amqp_url: str, redis_url: str) -> AsyncIterator[Any]:
    from __main__ import _cluster  # the suite's one cluster recipe

    async with _cluster(amqp_url, redis_url) as (_coordinator, _transport, store):
        yield store


async def to_first_task_distributed(
    amqp_url: str, redis_url: str, count: int = 60
) -> dict[str, float]:
    async with _distributed_engine(amqp_url, redis_url) as store:
        with (
            tempfile.TemporaryDirectory() as scratch,
            server(
                Path(scratch),
                CONVEYOR_AMQP_URL=amqp_url,
                CONVEYOR_REDIS_URL=redis_url,
                CONVEYOR_SHARDS="1",
            ) as url,
        ):
            delays = await _to_first_task(url, store, count)
    return _percentiles("webhook_to_task_distributed", delays)
