"""A run change a process of the home could not announce before it stopped reaches the
workflow's ``notify:`` webhook from the next ``conveyor server``, once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from engine import announce
from engine.runlog.sqlite import SqliteRunLog
from tests.e2e.receiver import Receiver, until
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
    assert receiver.sent == []

    served = server(grace=1)
    served.start()
    until(lambda: receiver.sent != [], "the left completion was never delivered")
    headers, change = receiver.sent[0].headers, receiver.sent[0].change
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
    assert len(receiver.sent) == 1


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
    until(lambda: len(receiver.sent) >= 1, "the completion was never sent")  # refused: retried
    served.kill()
    receiver.refusing = False
    again = server(grace=1)
    again.start()
    until(lambda: receiver.delivered() != [], "the refused completion was never delivered")
    [change] = receiver.delivered()
    assert change["id"] == f"{run_id}/run_completed/0"
    assert {each.headers["webhook-id"] for each in receiver.sent} == {change["id"]}
