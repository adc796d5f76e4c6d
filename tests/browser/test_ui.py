"""The web UI in a real browser (Debian's Chromium driven by Playwright): a live run is
started, watched, opened item by item with its logs, approved; another is cancelled;
a 100,000-item run opens with a bounded page. Screenshots go to docs/images when
CONVEYOR_SCREENSHOTS=1."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import free_port, unavailable, wait_for_port

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "images"

FAN = """
name: fan
params: {n: {type: int, default: 12}, pause: {type: float, default: 0.3}}
tasks:
  - name: prepare
    script: echo ready
  - name: each
    depends: [prepare]
    items: range(params.n)
    parallelism: 4
    env: {I: "{{ item }}", PAUSE: "{{ params.pause }}"}
    script: 'echo "item $I starting"; sleep "$PAUSE"; echo "item $I done"; test "$I" != 7'
    retry: {limit: 1, backoff: {delay: 10ms}}
    continue_on_failure: true
  - name: report
    depends: [each]
    script: echo "report written"
  - name: approval
    depends: [report]
    wait: {}
  - name: ship
    depends: [approval]
    env: {BY: "{{ tasks.approval.outputs.result.by }}"}
    script: echo "shipped, approved by $BY"
"""

LONG = """
name: long
params: {n: {type: int, default: 100000}}
tasks:
  - name: each
    items: range(params.n)
    parallelism: 2
    script: sleep 600
"""


def serve_on(
    home: Path, port: int, grace: float | None = None, wake: float | None = None
) -> subprocess.Popen[bytes]:
    """``conveyor server`` of ``home``'s flows on ``port``, listening once this returns;
    ``grace``: how long its running steps get when it stops; ``wake``: how often it
    looks for runs of its home no process drives, to take them up."""
    extra = {} if grace is None else {"CONVEYOR_WORKER_GRACE": str(grace)}
    if wake is not None:
        extra["CONVEYOR_WAKE_INTERVAL"] = str(wake)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "server", "--workflows", "flows", "--port", str(port)],
        cwd=home,
        env={
            **os.environ,
            "CONVEYOR_HOME": str(home / ".conveyor"),
            "CONVEYOR_LOG_LEVEL": "warning",
            **extra,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port(port, 30, proc)
    return proc


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the server runs in: its flows, and its local home ``.conveyor``."""
    home = tmp_path_factory.mktemp("ui")
    (home / "flows").mkdir()
    (home / "flows" / "fan.yaml").write_text(FAN)
    (home / "flows" / "long.yaml").write_text(LONG)
    return home


@pytest.fixture(scope="module")
def server(served_home: Path) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        unavailable("no chromium for the browser tests (apt-get install chromium)")
    port = free_port()
    # A stalled run stays stalled until its page's Resume is clicked.
    proc = serve_on(served_home, port, wake=600)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
async def page(server: str) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        opened = await context.new_page()
        # Whatever the pages do, the browser reports no script error and loads every
        # page, script, style and icon. (An API call may fail on purpose: a bad
        # parameter's 400 is shown in place, and the browser logs it all the same.)
        problems: list[str] = []
        opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))

        def console(message: Any) -> None:
            if message.type != "error":
                return
            url = str(message.location.get("url", ""))
            if message.text.startswith("Failed to load resource") and "/api/" in url:
                return
            # A server a test stops on purpose can reset a request the page had in
            # flight: a refused or reset connection is the server gone, not the page at
            # fault (an answer of 4xx or 5xx still counts).
            if message.text.startswith("Failed to load resource: net::ERR_CONNECTION_"):
                return
            problems.append(f"console: {message.text} ({url})")

        opened.on("console", console)
        yield opened
        await browser.close()
        assert not problems, problems


async def start(server: str, workflow: str, **params: object) -> str:
    async with httpx.AsyncClient(base_url=server) as http:
        answer = await http.post("/api/v1/runs", json={"workflow": workflow, "params": params})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["run_id"])


async def shot(page: object, name: str) -> None:
    if os.environ.get("CONVEYOR_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


async def test_a_live_run_is_watched_opened_and_approved(server: str, page: object) -> None:
    from playwright.async_api import Page, expect

    assert isinstance(page, Page)
    # Started from the UI: a bad parameter is refused in place, a good one opens the run.
    await page.goto(f"{server}/workflows")
    params = page.get_by_label("parameters of fan", exact=True)
    # The form starts from the defaults, and says what each parameter takes.
    await expect(params).to_have_value('{\n  "n": 12,\n  "pause": 0.3\n}')
    described = page.get_by_label("the parameters of fan")
    await expect(described).to_contain_text("n int, default 12")
    await params.fill('{"n": "many"}')
    await page.get_by_role("button", name="Start a run of fan").click()
    await expect(page.locator("form[data-start='fan'] .error")).to_contain_text("expected int")
    await params.fill('{"n": 12}')
    await page.get_by_role("button", name="Start a run of fan").click()
    await expect(page.locator("#run-state")).to_have_text("running")
    run_id = page.url.rsplit("/", 1)[-1]
    await page.goto(f"{server}/runs")
    row = page.locator("table.runs tr", has_text=run_id[:12])
    await expect(row).to_be_visible()
    await row.get_by_role("link").click()
    await expect(page.locator("#run-state")).to_have_text("running")
    # States change in front of us: items finish while we watch.
    each = page.locator(".dag .node[data-task='each'] text.caption")
    await expect(each).to_contain_text("/12 done")
    await expect(page.locator(".dag .node[data-task='approval']")).to_have_class(
        "node running", timeout=30_000
    )
    # The timeline has a bar per attempt of each plain task, one for the whole fan-out.
    await expect(page.locator(".gantt text", has_text="prepare #1")).to_be_visible()
    await expect(page.locator(".gantt text", has_text="each")).to_have_count(1)
    # Its bars stretch across the panel, whatever the window's width.
    timeline = await page.locator("section.panel", has=page.locator(".gantt")).bounding_box()
    bars = await page.locator(".gantt svg.bars").bounding_box()
    assert timeline is not None and bars is not None
    assert bars["x"] + bars["width"] > timeline["x"] + timeline["width"] * 0.95
    await expect(page.locator(".gantt text.tick").first).to_have_text("0s")
    await shot(page, "run-waiting")
    # The fan-out opens as a table of items, with each item's logs.
    await page.locator(".dag .node[data-task='each']").click()
    items = page.locator("#task-panel table.items tbody tr")
    await expect(items).to_have_count(12)
    await page.locator("#task-panel a[data-items='?state=failed']").click()
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("exit code 1")
    await page.locator("#task-panel a.logs-link").first.click()
    # An item's lines name it; a task that is not a fan-out has no item to name.
    await expect(page.locator("#logs")).to_contain_text("each[7]#1 stdout| item 7 done")
    await shot(page, "task-items-and-logs")
    await page.get_by_role("button", name="Approve approval").click()
    await expect(page.locator("#run-state")).to_have_text("succeeded", timeout=30_000)
    await expect(page.locator(".gantt text", has_text="approval #1")).to_be_visible()
    await page.locator(".dag .node[data-task='ship']").click()
    await expect(page.locator("#logs")).to_contain_text("ship#1 stdout| shipped, approved by open")
    # A single task's logs are already below: its row has no item number or logs link.
    await expect(page.locator("#task-panel a.logs-link")).to_have_count(0)
    await expect(page.locator("#task-panel table.items th", has_text="#")).to_have_count(0)
    await shot(page, "run-succeeded")
    await page.goto(f"{server}/workflows")
    await expect(page.get_by_role("heading", name="fan version 1")).to_be_visible()


async def test_a_run_is_cancelled_then_deleted_from_its_page(server: str, page: object) -> None:
    from playwright.async_api import Page, expect

    assert isinstance(page, Page)
    run_id = await start(server, "fan", pause=30.0)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events/stream" in r.url else None)
    await page.goto(f"{server}/runs/{run_id}")
    await expect(page.locator(".dag .node[data-task='each'] text.caption")).to_contain_text("0/12")
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#run-state")).to_have_text("cancelled", timeout=30_000)
    # The page follows the events after those it was drawn from, not the run's whole log.
    shown = int(streams[0].partition("after=")[2].partition("&")[0] or 0)
    assert shown >= 2, streams  # submitted and expanded, at least
    assert "changes=true" in streams[0]  # told what changed, not sent every event
    await page.goto(f"{server}/runs?state=cancelled")
    await expect(page.locator("table.runs tr", has_text=run_id[:12])).to_be_visible()
    await shot(page, "runs")

    # Ended, it can be deleted: asked first, then gone from the list and the API.
    await page.goto(f"{server}/runs/{run_id}")
    asked: list[str] = []

    async def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        await (dialog.dismiss() if len(asked) == 1 else dialog.accept())

    page.on("dialog", answer)
    await page.get_by_role("button", name="Delete").click()  # dismissed: kept
    await page.get_by_role("button", name="Delete").click()
    await page.wait_for_url(f"{server}/runs")
    assert (
        asked == [f"Delete run {run_id[:12]} for good: its events, output lines and artifacts?"] * 2
    )
    await expect(page.locator("table.runs tr", has_text=run_id[:12])).to_have_count(0)
    assert httpx.get(f"{server}/api/v1/runs/{run_id}").status_code == 404


STALLS = """
name: stalls
tasks:
  - name: work
    script: |
      echo $$ > {pidfile}
      test -f {flag} && echo "done this time" && exit 0
      exec sleep 600
  - name: after
    depends: [work]
    script: echo after
"""


async def test_a_run_whose_process_was_killed_shows_stalled_and_resumes_from_its_page(
    server: str, served_home: Path, page: object
) -> None:
    """A ``conveyor run`` on the server's home, killed: nothing drives its run any more."""
    from playwright.async_api import Page, expect

    assert isinstance(page, Page)
    pidfile, flag = served_home / "stalls.pid", served_home / "stalls.ok"
    (served_home / "stalls.yaml").write_text(STALLS.format(pidfile=pidfile, flag=flag))
    running = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", "stalls.yaml"],
        cwd=served_home,
        env={**os.environ, "CONVEYOR_HOME": str(served_home / ".conveyor")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    async with httpx.AsyncClient(base_url=server) as http:
        async with asyncio.timeout(30):
            while not (pidfile.exists() and pidfile.read_text().strip()):
                await asyncio.sleep(0.05)
        listed = (await http.get("/api/v1/runs", params={"workflow": "stalls"})).json()
        [run_id] = [r["run_id"] for r in listed["items"]]
        await page.goto(f"{server}/runs/{run_id}")  # while its process drives it
        await expect(page.locator("#run-state")).to_have_text("running")
        await expect(page.get_by_role("button", name="Resume")).to_have_count(0)
        running.kill()
        running.wait()
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        async with asyncio.timeout(30):
            while not (await http.get(f"/api/v1/runs/{run_id}")).json()["stalled"]:
                await asyncio.sleep(0.1)
    flag.touch()  # the step's next attempt succeeds
    await page.goto(f"{server}/runs/{run_id}")
    await expect(page.locator(".runhead .pill.stalled")).to_have_text("stalled")
    await shot(page, "run-stalled")
    await page.get_by_role("button", name="Resume").click()
    await expect(page.locator("#run-state")).to_have_text("succeeded", timeout=30_000)
    await expect(page.locator(".runhead .pill.stalled")).to_have_count(0)
    await expect(page.locator("table.tasks tr", has_text="work")).to_contain_text("2")


async def test_a_run_of_100000_items_opens_with_a_bounded_page(server: str, page: object) -> None:
    from playwright.async_api import Page, expect

    assert isinstance(page, Page)
    run_id = await start(server, "long")
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        for _ in range(300):
            detail = (await http.get(f"/api/v1/runs/{run_id}")).json()
            each = detail["tasks"][0]
            if each.get("items", {}).get("count") == 100_000:
                break
            await asyncio.sleep(0.1)
        assert each["items"]["count"] == 100_000
    began = time.monotonic()
    await page.goto(f"{server}/runs/{run_id}")
    await expect(page.locator(".dag .node[data-task='each'] text.caption")).to_contain_text(
        "100,000"
    )
    opened = time.monotonic() - began
    nodes = await page.evaluate("document.getElementsByTagName('*').length")
    assert nodes < 500, f"{nodes} DOM nodes for a run of 100,000 items"
    await page.locator(".dag .node[data-task='each']").click()
    await expect(page.locator("#task-panel table.items tbody tr")).to_have_count(50)
    await expect(page.locator("#task-panel .pager")).to_contain_text("next")
    # An item deep in the fan-out is reached by its number, not by 1,470 pages of next.
    await page.locator("#task-panel form[data-jump] input[name=item]").fill("73512")
    await page.locator("#task-panel form[data-jump] input[name=item]").press("Enter")
    rows = page.locator("#task-panel table.items tbody tr")
    await expect(rows.first.locator("td").first).to_have_text("73512")
    await expect(rows).to_have_count(50)
    await expect(rows.last.locator("td").first).to_have_text("73561")
    await expect(page.locator("#task-panel .pager")).to_contain_text("previous")
    await shot(page, "run-100000-items")
    print(f"\n[ui] run page of 100,000 items opened in {opened * 1000:.0f} ms, {nodes} DOM nodes")
    async with httpx.AsyncClient(base_url=server) as http:
        await http.post(f"/api/v1/runs/{run_id}/cancel")


GATE = """
name: gate
tasks:
  - name: wait
    script: 'while ! test -f "$GATE"; do sleep 0.1; done; echo through'
    env: {GATE: "GATE_FILE"}
"""


def gate_home(home: Path) -> Path:
    """Flows in ``home`` with the workflow ``gate``, whose step waits for the file this
    returns."""
    (home / "flows").mkdir(parents=True)
    gate = home / "gate"
    (home / "flows" / "gate.yaml").write_text(GATE.replace("GATE_FILE", str(gate)))
    return gate


async def open_a_running_gate(page: Any, url: str) -> None:
    """Start a run of ``gate`` on the server at ``url`` and open its page."""
    from playwright.async_api import expect

    run_id = await start(url, "gate")
    await page.goto(f"{url}/runs/{run_id}")
    await expect(page.locator("#run-state")).to_have_text("running")


async def test_a_run_page_open_across_a_server_restart_says_so_and_catches_up(
    page: object, tmp_path: Path
) -> None:
    from playwright.async_api import Page, expect

    assert isinstance(page, Page)
    gate = gate_home(tmp_path)
    port = free_port()
    proc = serve_on(tmp_path, port, grace=0.5)
    try:
        await open_a_running_gate(page, f"http://127.0.0.1:{port}")
        await expect(page.locator("#connection")).to_be_hidden()
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 30) == 0
        await expect(page.locator("#connection")).to_be_visible()
        await shot(page, "run-reconnecting")
        gate.touch()  # the step's next attempt goes through
        proc = serve_on(tmp_path, port, grace=0.5)
        await expect(page.locator("#run-state")).to_have_text("succeeded", timeout=30_000)
        await expect(page.locator("#connection")).to_be_hidden()
    finally:
        await page.goto("about:blank")  # nothing left on the page to call the server
        proc.terminate()
        proc.wait(timeout=30)


async def test_a_run_page_whose_server_refuses_its_stream_says_to_reload(
    page: object, tmp_path: Path
) -> None:
    """Another server came back on the address, one that does not know the run (its
    stream answers 404): the browser does not retry, and the page says so."""
    from playwright.async_api import Page, expect

    assert isinstance(page, Page)
    first, other = tmp_path / "first", tmp_path / "other"
    gate_home(first)
    gate_home(other)
    port = free_port()
    proc = serve_on(first, port, grace=0.5)
    try:
        await open_a_running_gate(page, f"http://127.0.0.1:{port}")
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 30) == 0
        proc = serve_on(other, port, grace=0.5)
        await expect(page.locator("#connection")).to_contain_text("reload", timeout=30_000)
    finally:
        await page.goto("about:blank")
        proc.terminate()
        proc.wait(timeout=30)
