"""A run change a process of the home could not announce before it stopped reaches the
workflow's ``notify:`` webhook from the next ``conveyor server``, once."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
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


@dataclass
class Receiver:
    """A ``notify:`` receiver: what it was sent (headers, CloudEvent), and whether it
    answers 503 for now."""

    url: str = ""
    got: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    refusing: bool = False

    def delivered(self) -> list[dict[str, Any]]:
        return [change for headers, change in self.got if headers.get("x-answered") == "204"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            status = 503 if found.refusing else 204
            found.got.append(({**self.headers, "x-answered": str(status)}, json.loads(body)))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    found.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield found
    httpd.shutdown()


def until(condition: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_completion_left_unannounced_is_delivered_by_the_next_server(
    server: Any,
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(announce, "PUBLISH_ATTEMPTS", 1)
    monkeypatch.setenv("TOLD_SECRET", "a secret of the receiver's")
    home_log = tmp_path / ".conveyor" / "conveyor.db"

    async def run_without_announcing() -> str:
        # A process of this home whose broker refused its announcements, then stopped.
        store = SqliteRunLog(home_log)
        try:
            async with EmbeddedEngine(store, transport=RefusingTransport()) as engine:
                state = await engine.run(parse_workflow(TOLD.format(url=receiver.url)), {})
            assert state.status == "succeeded"
            return state.run_id
        finally:
            await store.close()

    run_id = asyncio.run(run_without_announcing())
    assert receiver.got == []

    served = server(grace=1)
    served.start()
    until(lambda: receiver.got != [], "the left completion was never delivered")
    headers, change = receiver.got[0]
    assert change["type"] == "dev.conveyor.run.succeeded"
    assert change["data"]["run_id"] == run_id
    assert change["id"] == headers["webhook-id"] == f"{run_id}/run_completed/0"
    served.says("announcing run changes left unannounced")

    async def unannounced() -> list[str]:
        store = SqliteRunLog(home_log)
        try:
            return [event.id for event in await store.unannounced()]
        finally:
            await store.close()

    until(lambda: asyncio.run(unannounced()) == [], "the delivered changes stayed unannounced")
    served.kill()
    said_before = len(served.log.read_text())
    again = server(grace=1)  # on the same home, writing to the same log
    again.start()  # its port opens once it has looked for changes left unannounced
    assert "announcing run changes" not in again.log.read_text()[said_before:]
    assert len(receiver.got) == 1


def test_a_change_a_killed_server_was_still_delivering_is_delivered_by_the_next(
    server: Any, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its notifier's queue was in the killed process's memory: the change is handed
    over as unannounced until the notifier has handled it."""
    monkeypatch.setenv("TOLD_SECRET", "a secret of the receiver's")
    receiver.refusing = True
    served = server(grace=1)
    (tmp_path / "flows" / "told.yaml").write_text(TOLD.format(url=receiver.url))
    served.start()
    answer = httpx.post(f"{served.url}/api/v1/runs", json={"workflow": "told"}, timeout=10)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    until(lambda: len(receiver.got) >= 1, "the completion was never sent")  # refused: retried
    served.kill()
    receiver.refusing = False
    again = server(grace=1)
    again.start()
    until(lambda: receiver.delivered() != [], "the refused completion was never delivered")
    [change] = receiver.delivered()
    assert change["id"] == f"{run_id}/run_completed/0"
    assert {headers["webhook-id"] for headers, _ in receiver.got} == {change["id"]}
