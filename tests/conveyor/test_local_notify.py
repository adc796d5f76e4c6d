"""The notifications of a run driven in this process stop being waited for once nothing
here can handle what is owed: a change whose mark could not be recorded stays owed, for
the next server, and the command does not hang on it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import structlog

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.local_notify import notifications
from engine.runlog.memory import MemoryRunLog
from tests.services import free_port

TOLD = """
name: told
tasks:
  - name: a
    command: [echo, hi]
notify:
  - url: http://127.0.0.1:{port}/nobody-listens
    attempts: 1
"""


class UnmarkableLog(MemoryRunLog):
    async def announced(self, event_ids: Sequence[str]) -> None:
        raise OSError("the run log refused the mark")


async def test_a_change_whose_mark_fails_stays_owed_and_is_not_waited_for(
    tmp_path: Path,
) -> None:
    workflow = parse_workflow(TOLD.format(port=free_port()))
    store = UnmarkableLog()
    async with EmbeddedEngine(store, listener_marks_announced=True) as engine:
        run_id = "r-unmarkable"
        async with notifications(engine, tmp_path, run_id, workflow) as notices:
            assert notices is not None
            await engine.submit(workflow, {}, run_id=run_id)
            state = await engine.wait(run_id)
            with structlog.testing.capture_logs() as said:
                async with asyncio.timeout(30):
                    await notices.delivered()
    assert state.status == "succeeded"
    assert [e.id for e in await store.unannounced()] == [
        f"{run_id}/run_submitted",
        f"{run_id}/run_completed/0",
    ]
    [outcome] = notices.outcomes  # the completion; the start is not asked for
    assert outcome.decision == "failed" and "ConnectError" in outcome.reason
    assert any(line["event"] == "run changes left unannounced" for line in said)


async def test_a_workflow_without_notify_entries_has_no_notifications(tmp_path: Path) -> None:
    workflow = parse_workflow("name: quiet\ntasks:\n  - name: a\n    command: [echo, hi]\n")
    async with (
        EmbeddedEngine() as engine,
        notifications(engine, tmp_path, "r-quiet", workflow) as notices,
    ):
        assert notices is None
