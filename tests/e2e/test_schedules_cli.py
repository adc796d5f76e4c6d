"""`conveyor apply`, `schedules` and `backfill` on a local home, and a server's sweep
starting the backfilled runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conveyor.embedded import EmbeddedEngine
from conveyor.server.runtime import TriggerRuntime
from engine.runlog.sqlite import SqliteRunLog
from engine.triggers.schedule import fire_run_id
from engine.triggers.stores.sqlite import SqliteTriggerStore
from tests.e2e.commands import conveyor

DAILY = """
name: daily
params: {day: {type: str, default: ""}}
tasks:
  - name: report
    env: {DAY: "{{ params.day }}"}
    script: echo "report for $DAY"
triggers:
  - name: midnight
    schedule: {cron: "0 0 * * *", timezone: Europe/Berlin, params: {day: "{{ nominal[:10] }}"}}
"""


def test_backfill_previews_then_queues_each_nominal_time_once(tmp_path: Path) -> None:
    from datetime import datetime

    (tmp_path / "daily.yaml").write_text(DAILY)
    applied = conveyor("apply", "daily.yaml", cwd=tmp_path)
    assert applied.returncode == 0 and "version 1 registered" in applied.stdout
    again = conveyor("apply", "daily.yaml", cwd=tmp_path)
    assert "version 1 registered" in again.stdout  # unchanged: the same version
    listed = conveyor("schedules", "--json", cwd=tmp_path)
    assert '"trigger": "midnight"' in listed.stdout and '"last_fire": null' in listed.stdout
    window = ["--from", "2026-03-27T00:00+01:00", "--to", "2026-03-30T12:00+02:00"]
    preview = conveyor("backfill", "daily", "midnight", *window, "--dry-run", cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert "4 runs would be started (dry run: nothing was)" in preview.stdout
    # Midnight in Berlin, across the change to summer time (UTC+1, then UTC+2).
    stamps = [line.split()[0] for line in preview.stdout.splitlines()[:4]]
    assert stamps == [
        "2026-03-26T23:00:00+00:00",
        "2026-03-27T23:00:00+00:00",
        "2026-03-28T23:00:00+00:00",
        "2026-03-29T22:00:00+00:00",
    ]
    one_night = ["--from", "2026-03-27T00:00+01:00", "--to", "2026-03-27T12:00+01:00"]
    single = conveyor("backfill", "daily", "midnight", *one_night, "--dry-run", cwd=tmp_path)
    assert "1 run would be started (dry run: nothing was)" in single.stdout
    queued = conveyor("backfill", "daily", "midnight", *window, cwd=tmp_path)
    assert "4 runs queued for the server to start; 0 had run already" in queued.stdout
    twice = conveyor("backfill", "daily", "midnight", *window, cwd=tmp_path)
    assert "0 runs queued for the server to start; 4 had run already" in twice.stdout
    bad = conveyor("backfill", "daily", "nope", *window, cwd=tmp_path)
    assert bad.returncode == 2 and "no schedule trigger daily/nope" in bad.stderr

    async def serve() -> list[str]:
        home = tmp_path / ".conveyor"
        store = SqliteTriggerStore(home / "conveyor.db")
        runs = SqliteRunLog(home / "conveyor.db")
        try:
            async with EmbeddedEngine(runs) as engine:
                runtime = TriggerRuntime(store, engine.client, sweep_interval=3600)
                await runtime.start()
                assert await runtime.sweep_now() == 4
                days = []
                for stamp in stamps:
                    run_id = fire_run_id("daily", "midnight", datetime.fromisoformat(stamp))
                    state = await engine.client.watch(run_id, timeout=20)
                    days.append(state.params["day"])
                await runtime.stop()
                return days
        finally:
            await store.close()
            await runs.close()

    assert asyncio.run(serve()) == ["2026-03-26", "2026-03-27", "2026-03-28", "2026-03-29"]
    logged = json.loads(conveyor("trigger-log", "daily", "--json", cwd=tmp_path).stdout)
    fired = [(r["decision"], r["reason"]) for r in logged if r["run_id"]]
    assert fired == [("fired", "conveyor backfill")] * 4
    # Piped, the table is drawn at its own width: a row is one line, whole, for grep.
    piped = conveyor("trigger-log", "daily", cwd=tmp_path, extra_env={"COLUMNS": ""})
    rows = [line for line in piped.stdout.splitlines() if " fired " in line]
    assert len(rows) == 4 and all(row.rstrip(" │").endswith("conveyor backfill") for row in rows)
