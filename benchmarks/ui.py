"""UI and API figures against a real ``conveyor server`` (embedded) on this machine.

- ``ui_run_page_100k_ms``: a run of 100,000 items opened in Chromium (Playwright), from
  navigation to its DAG drawn; the first load (the server builds the run's state from its
  log) and the median of the five after it (the server's client brings the state it
  kept up to date). ``ui_run_page_100k_dom_nodes``.
  ``ui_run_page_1m_*`` the same for 1,000,000 items.
- ``api_runs_page_p50_ms`` / ``_p99_ms``: paging through 10,000 runs, 50 a page, with
  the cursor.
- ``sse_lag_10k_max_ms``: the event stream of a 10,000-item fan-out, read as it runs:
  the most any event arrived after it was stamped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from webhooks import _port, _process, server_env

LONG = """
name: long
params: {n: {type: int, default: 100000}}
tasks:
  - name: each
    items: range(params.n)
    parallelism: 2
    script: sleep 600
"""
FAN = """
name: fan
tasks:
  - name: each
    items: range(10000)
    python: benchsteps:noop
"""


@contextmanager
def server(home: Path) -> Iterator[str]:
    (home / "flows").mkdir(exist_ok=True)
    (home / "flows" / "long.yaml").write_text(LONG)
    (home / "flows" / "fan.yaml").write_text(FAN)
    port = _port()
    env = server_env(CONVEYOR_HOME=str(home / ".conveyor"))
    args = [sys.executable, "-m", "conveyor", "server", "--workflows", "flows", "--port", str(port)]
    with _process(args, port, env, home) as url:
        yield url


async def _fill_runs(home: Path, count: int) -> None:
    """``count`` finished runs in the home's log, as if they had run."""
    from contracts.events import RunCompleted, RunSubmitted
    from contracts.vocabulary import RunStatus
    from engine.runlog.sqlite import SqliteRunLog

    store = SqliteRunLog(home / ".conveyor" / "conveyor.db")
    try:
        workflow = {"name": "filled", "tasks": [{"name": "a", "script": "true"}]}
        for n in range(count):
            run_id = f"{n:032x}"
            at = 1_700_000_000.0 + n
            await store.append(
                run_id,
                [
                    RunSubmitted(run_id=run_id, at=at, workflow=workflow, params={}),
                    RunCompleted(run_id=run_id, at=at + 1, state=RunStatus.SUCCEEDED),
                ],
            )
    finally:
        await store.close()


async def api_pages(count: int = 10_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        await _fill_runs(home, count)
        with server(home) as url:
            latencies = []
            seen = 0
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                cursor = None
                while True:
                    query = "/api/v1/runs?limit=50" + (f"&cursor={cursor}" if cursor else "")
                    began = time.perf_counter()
                    page = (await http.get(query)).json()
                    latencies.append(time.perf_counter() - began)
                    seen += len(page["items"])
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
    assert seen == count, seen
    latencies.sort()
    return {
        "api_runs_page_p50_ms": statistics.median(latencies) * 1000,
        "api_runs_page_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def run_page_100k() -> dict[str, float]:
    return await run_page(100_000)


async def run_page(n: int) -> dict[str, float]:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    size = f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"
    with tempfile.TemporaryDirectory() as scratch, server(Path(scratch)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            answer = await http.post("/api/v1/runs", json={"workflow": "long", "params": {"n": n}})
            run_id = answer.json()["run_id"]
            # Waiting on the log, not the run page's data: the first page load below is
            # the first time the server builds this run's state.
            while not any(
                e["type"] == "task_expanded"
                for e in (await http.get(f"/api/v1/runs/{run_id}/events")).json()["items"]
            ):
                await asyncio.sleep(0.1)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
                )
                page = await browser.new_page()
                loads = []
                for _ in range(6):
                    began = time.perf_counter()
                    await page.goto(f"{url}/runs/{run_id}")
                    await page.wait_for_selector(".dag .node[data-task='each']")
                    loads.append(time.perf_counter() - began)
                nodes = await page.evaluate("document.getElementsByTagName('*').length")
                await browser.close()
            await http.post(f"/api/v1/runs/{run_id}/cancel")
    return {
        f"ui_run_page_{size}_first_ms": loads[0] * 1000,
        f"ui_run_page_{size}_ms": statistics.median(loads[1:]) * 1000,
        f"ui_run_page_{size}_dom_nodes": float(nodes),
    }


async def sse_lag() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch, server(Path(scratch)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            answer = await http.post("/api/v1/runs", json={"workflow": "fan"})
            run_id = answer.json()["run_id"]
            worst, events = 0.0, 0
            async with http.stream("GET", f"/api/v1/runs/{run_id}/events/stream") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        stamped = json.loads(line[6:])["at"]
                        worst = max(worst, time.time() - stamped)
                        events += 1
    assert events > 20_000, events
    return {"sse_lag_10k_max_ms": worst * 1000, "sse_events_10k": float(events)}
