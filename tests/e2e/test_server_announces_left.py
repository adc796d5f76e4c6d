"""A run change a process of the home could not announce before it stopped reaches the
workflow's ``notify:`` webhook from the next ``conveyor server``, once."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from engine import announce
from engine.runlog.sqlite import SqliteRunLog
from tests.engine.test_announce_owed import RefusingTransport

pytestmark = pytest.mark.timeout(120)

TOLD = """
name: told
tasks:
  - name: a
    command: [echo, hi]
notify:
  - url: {url}/hook
    secret_env: TOLD_SECRET
"""


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    got: list[tuple[dict[str, str], dict[str, Any]]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append((dict(self.headers), json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", got
    httpd.shutdown()


def test_a_completion_left_unannounced_is_delivered_by_the_next_server(
    server: Any,
    tmp_path: Path,
    receiver: tuple[str, list[tuple[dict[str, str], dict[str, Any]]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, got = receiver
    monkeypatch.setattr(announce, "PUBLISH_ATTEMPTS", 1)
    monkeypatch.setenv("TOLD_SECRET", "a secret of the receiver's")
    home_log = tmp_path / ".conveyor" / "conveyor.db"

    async def run_without_announcing() -> str:
        # A process of this home whose broker refused its announcements, then stopped.
        store = SqliteRunLog(home_log)
        try:
            async with EmbeddedEngine(store, transport=RefusingTransport()) as engine:
                state = await engine.run(parse_workflow(TOLD.format(url=url)), {})
            assert state.status == "succeeded"
            return state.run_id
        finally:
            await store.close()

    run_id = asyncio.run(run_without_announcing())
    assert got == []

    served = server(grace=1)
    served.start()
    deadline = time.monotonic() + 30
    while not got:
        assert time.monotonic() < deadline, "the left completion was never delivered"
        time.sleep(0.05)
    headers, change = got[0]
    assert change["type"] == "dev.conveyor.run.succeeded"
    assert change["data"]["run_id"] == run_id
    assert change["id"] == headers["webhook-id"] == f"{run_id}/run_completed/0"
    served.says("announcing run changes a stopped coordinator left")

    async def unannounced() -> list[str]:
        store = SqliteRunLog(home_log)
        try:
            return [event.id for event in await store.unannounced()]
        finally:
            await store.close()

    while asyncio.run(unannounced()):
        assert time.monotonic() < deadline, "the delivered changes stayed unannounced"
        time.sleep(0.05)
    served.kill()
    said_before = len(served.log.read_text())
    again = server(grace=1)  # on the same home, writing to the same log
    again.start()  # its port opens once it has looked for changes left unannounced
    assert "announcing run changes" not in again.log.read_text()[said_before:]
    assert len(got) == 1
