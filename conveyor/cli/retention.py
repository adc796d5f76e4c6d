"""Deleting runs: one by one (``delete``), or every ended run past a period (``prune``).

Either home: the local file (and its artifacts folder) or, with ``CONVEYOR_REDIS_URL``
set, Redis and the artifact store ``CONVEYOR_ARTIFACTS_URL`` names. Nothing needs the
broker: a deleted run is one that has ended, so no coordinator has anything to send
for it, and a late result of one of its attempts is not appended.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from contracts.codec import to_builtins
from contracts.durations import parse_duration
from contracts.errors import InvalidInput, NotFound, Problem
from contracts.ports import RunSummary
from contracts.vocabulary import RunStatus
from conveyor import loop
from conveyor.cli.common import (
    DEFAULT_HOME,
    HomeOption,
    JsonOption,
    RedisOption,
    err,
    fail_input,
    out,
    say,
    settings_from,
    write_json,
)
from conveyor.cli.inspect import require_runs_here
from conveyor.locks import forget_run
from conveyor.progress import counted
from conveyor.report import when
from conveyor.settings import Settings
from conveyor.wiring import open_artifacts, open_client, runs_in_home

if TYPE_CHECKING:
    from engine.retention import Retention

RunsArgument = Annotated[
    list[str], typer.Argument(metavar="RUN...", help="Run ids or unique prefixes.")
]


def _period(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise fail_input(InvalidInput([Problem(str(exc))], source="--older-than")) from None


def _delete(settings: Settings, runs: list[str]) -> None:
    """Delete each run in turn, saying so as it goes (a run refused stops the rest)."""

    async def go() -> None:
        artifacts = open_artifacts(settings)
        async with open_client(settings) as client:
            for run in runs:

                def gone(row: RunSummary) -> None:
                    _forget_locally(settings, row.run_id)
                    say(f"deleted {row.run_id}")

                await client.delete(run, artifacts, deleted=gone)

    loop.run(go())


def _prune(
    settings: Settings, rule: Retention, now: float, *, dry_run: bool, listed: bool
) -> tuple[int, list[RunSummary]]:
    """How many runs were pruned (or, dry, would be), shown as the count grows, and
    which, if ``listed`` (a count of millions keeps none of them)."""
    # Here, not above: the command line loads no Redis client unless one is used.
    from engine.retention import expired_runs, prune

    async def go() -> tuple[int, list[RunSummary]]:
        rows: list[RunSummary] = []
        count = 0
        async with open_client(settings) as client:
            with err.status("looking for runs") as status:

                def note(row: RunSummary) -> None:
                    nonlocal count
                    count += 1
                    if listed:
                        rows.append(row)
                    if not dry_run:
                        _forget_locally(settings, row.run_id)
                    status.update(f"{'found' if dry_run else 'deleted'} {counted(count, 'run')}")

                if dry_run:
                    async for row in expired_runs(client, rule, now):
                        note(row)
                    return count, rows
                artifacts = open_artifacts(settings)
                done = await prune(client, rule, now, artifacts=artifacts, deleted=note)
        if done.kept_running:
            kept = counted(done.kept_running, "run")
            err.print(f"kept {kept} retried while being deleted")
        return count, rows

    return loop.run(go())


def _forget_locally(settings: Settings, run_id: str) -> None:
    if runs_in_home(settings):
        forget_run(settings.home, run_id)


def register(app: typer.Typer) -> None:
    @app.command()
    def delete(
        runs: RunsArgument,
        home: HomeOption = DEFAULT_HOME,
        redis_url: RedisOption = None,
    ) -> None:
        """Delete ended runs for good: their events, output lines and artifacts."""
        settings = settings_from(redis_url=redis_url, home=home)
        require_runs_here(settings)
        try:
            _delete(settings, runs)
        except (InvalidInput, NotFound) as exc:  # a run running, or none such
            raise fail_input(exc) from None

    @app.command()
    def prune(
        older_than: Annotated[
            str,
            typer.Option(
                "--older-than",
                metavar="PERIOD",
                help="Delete runs that ended longer ago than this (30d, 12h, 90m).",
            ),
        ],
        state: Annotated[
            RunStatus | None, typer.Option(help="Only runs that ended in this state.")
        ] = None,
        workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run/--no-dry-run", help="List the runs that would go; delete none."
            ),
        ] = False,
        as_json: JsonOption = False,
        home: HomeOption = DEFAULT_HOME,
        redis_url: RedisOption = None,
    ) -> None:
        """Delete every run that ended longer ago than a period (runs still running stay)."""
        if state == RunStatus.RUNNING:
            raise fail_input(
                InvalidInput(
                    [Problem(f"{state}: runs still running are never pruned")], source="--state"
                )
            )
        keep = _period(older_than)
        settings = settings_from(redis_url=redis_url, home=home)
        require_runs_here(settings)
        from engine.retention import Retention

        rule = Retention(keep, None if state is None else str(state), workflow)
        now = time.time()
        try:
            count, rows = _prune(settings, rule, now, dry_run=dry_run, listed=dry_run or as_json)
        except (InvalidInput, NotFound) as exc:  # a run running, or none such
            raise fail_input(exc) from None
        if as_json:
            write_json([to_builtins(row) for row in rows])
            return
        if rows:
            table = Table()
            for column in ("run", "workflow", "state", "ended"):
                table.add_column(column)
            for row in rows:
                table.add_row(row.run_id[:12], row.workflow, row.state, when(row.finished_at))
            out.print(table)
        verb = "would delete" if dry_run else "deleted"
        say(f"{verb} {counted(count, 'run')} that ended before {when(now - keep)} UTC")
