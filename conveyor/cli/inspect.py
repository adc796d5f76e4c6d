"""Commands that read runs: list, show, logs, events, artifacts. They change nothing.

Each reads through the client, from the local file or from Redis when
``CONVEYOR_REDIS_URL`` is set.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.table import Table

from contracts.codec import to_builtins
from contracts.errors import ConveyorError, InvalidInput, NotFound, Problem, did_you_mean
from contracts.events import ArtifactRef
from contracts.ports import LogLine
from contracts.vocabulary import TRIGGER_FILTER, RunStatus
from conveyor import loop
from conveyor.cli.common import (
    DEFAULT_HOME,
    HomeOption,
    JsonOption,
    fail_input,
    out,
    say,
    settings_from,
    write_json,
)
from conveyor.locks import run_driver
from conveyor.progress import summary
from conveyor.report import run_report, when
from conveyor.settings import Settings
from conveyor.terminal import displayable
from conveyor.wiring import open_artifacts, open_client, runs_in_home
from engine.client import Client
from engine.runlog.index import parent_of
from engine.state.model import RunState

T = TypeVar("T")
LINES_INTERVAL = 0.5
"""How often ``logs --follow`` looks for new output lines."""
LINES_PAGE = 5000
"""Lines ``logs`` reads at a time: a 100,000-item task's output is never held whole."""
DRIVER_LOOK = 1.0
"""How often ``logs --follow`` on a local home looks that a process still runs the run."""
RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="Run id or a unique prefix.")]


def _read(home: Path, read: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``read`` with a client on the home; a run that is not there is bad input."""

    settings = settings_from(home=home)

    async def go() -> T:
        async with open_client(settings) as client:
            return await read(client)

    require_runs_here(settings)
    try:
        return loop.run(go())
    except (NotFound, InvalidInput) as exc:
        raise fail_input(exc) from None


def require_runs_here(settings: Settings) -> None:
    """Exit with a clear error when runs are kept in a local home that does not exist
    (rather than make an empty one)."""
    home = settings.home
    if runs_in_home(settings) and not (home / "conveyor.db").exists():
        raise fail_input(
            InvalidInput(
                [
                    Problem(
                        f"no runs here: {home / 'conveyor.db'} does not exist (pass --home or"
                        " set CONVEYOR_HOME to where the runs were made; with"
                        " CONVEYOR_REDIS_URL set, runs are read from Redis)"
                    )
                ]
            )
        )


def register(app: typer.Typer) -> None:
    @app.command()
    def runs(
        state: Annotated[RunStatus | None, typer.Option(help="Only runs in this state.")] = None,
        workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
        trigger: Annotated[
            str | None,
            typer.Option(
                help="Only runs started so: cli, api, a kind of trigger (webhook, schedule,"
                " queue, sensor), or one trigger (webhook:push)."
            ),
        ] = None,
        top_level: Annotated[
            bool, typer.Option(help="Leave out child runs (those workflow steps started).")
        ] = False,
        limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 20,
        as_json: JsonOption = False,
        home: HomeOption = DEFAULT_HOME,
    ) -> None:
        """List recent runs, newest first."""
        status = None if state is None else str(state)
        if trigger is not None and not re.match(TRIGGER_FILTER, trigger):
            raise fail_input(
                InvalidInput(
                    [Problem(f"{trigger!r}: a kind (webhook) or a kind and a name (webhook:push)")],
                    source="--trigger",
                )
            )
        rows = _read(
            home,
            lambda c: c.runs(
                state=status, workflow=workflow, trigger=trigger, limit=limit, top_level=top_level
            ),
        )
        stalled = _stalled(home, [row.run_id for row in rows if row.state == RunStatus.RUNNING])
        if as_json:
            write_json([{**to_builtins(row), "stalled": row.run_id in stalled} for row in rows])
            return
        table = Table()
        for column in ("run", "workflow", "state", "trigger", "submitted", "duration"):
            table.add_column(column)
        for row in rows:
            took = f"{row.finished_at - row.submitted_at:.2f}s" if row.finished_at else ""
            shown = f"{row.state} (stalled)" if row.run_id in stalled else row.state
            submitted = when(row.submitted_at)
            parent = parent_of(row)
            started = row.trigger if parent is None else f"parent {parent[:12]}"
            table.add_row(row.run_id[:12], row.workflow, shown, started, submitted, took)
        out.print(table)
        if stalled:
            say(f"stalled: {_ended_first('RUN')}")

    @app.command()
    def show(
        run_id: RunArgument,
        as_json: JsonOption = False,
        home: HomeOption = DEFAULT_HOME,
    ) -> None:
        """Show a run: what started it, parameters, tasks, attempts, durations, outputs."""
        state = _read(home, lambda c: c.state(run_id))
        stalled = not state.finished and bool(_stalled(home, [state.run_id]))
        if as_json:
            write_json({**run_report(state), "stalled": stalled})
            return
        out.print(summary(state, with_origin=True))
        if stalled:
            say(f"stalled: {_ended_first(state.run_id[:12])}")

    @app.command()
    def logs(
        run_id: RunArgument,
        task: Annotated[str | None, typer.Argument(help="Only this task.")] = None,
        index: Annotated[
            int | None,
            typer.Option(min=0, help="Only this item of a fan-out task (read on its own)."),
        ] = None,
        attempt: Annotated[int | None, typer.Option(help="Only this attempt.")] = None,
        follow: Annotated[
            bool,
            typer.Option(
                "--follow/--no-follow", "-f", help="Keep printing new lines until the run ends."
            ),
        ] = False,
        raw: Annotated[
            bool,
            typer.Option(
                "--raw/--no-raw",
                help="Write lines exactly as the steps did, escape sequences and all (colours).",
            ),
        ] = False,
        home: HomeOption = DEFAULT_HOME,
    ) -> None:
        """Print the output lines of a run's steps, per task attempt.

        Tasks by name, then items, then attempts; each attempt's lines as printed."""

        fan_outs: set[str] = set()  # whose lines name their item

        def show(lines: list[LogLine]) -> None:
            for line in lines:
                item = f"[{line.index}]" if line.task in fan_outs else ""
                label = f"{line.task}{item}#{line.attempt}"
                text = line.text if raw else displayable(line.text)
                sys.stdout.write(f"{label} {line.stream}| {text}\n")
            sys.stdout.flush()

        async def read(client: Client) -> None:
            full = await client.find(run_id)
            tasks = (await client.workflow(full)).tasks
            fan_outs.update(t.name for t in tasks if t.fans_out)
            if index is not None and task is None:
                raise InvalidInput([Problem("--index picks an item of a task: name the task")])
            if task is not None:
                names = [t.name for t in tasks]
                if task not in names:
                    raise InvalidInput(
                        [
                            Problem(
                                f"run {full} has no task {task!r}{did_you_mean(task, names)};"
                                f" its tasks: {', '.join(names)}"
                            )
                        ]
                    )
            if task is not None and index is not None:
                # Only the state knows how many items a fan-out has.
                count = len((await client.state(full)).nodes[task].instances)
                if count and index >= count:
                    raise InvalidInput(
                        [Problem(f"task {task!r} has {count} item(s), 0 to {count - 1}")],
                        source="--index",
                    )
            if not follow:
                after, shown = None, 0
                while True:
                    page = await client.line_page(
                        full, task, index, attempt, after=after, limit=LINES_PAGE
                    )
                    show(page.lines)
                    shown += len(page.lines)
                    if (after := page.next) is None:
                        break
                if not shown:  # on stderr: a pipe reading the lines still reads none
                    whose = _whose(full, task, index, attempt)
                    sys.stderr.write(f"no lines: {whose} printed none\n")
                return

            # What is stored now (shown as read, not held), then what running attempts
            # print, each line read once; the run's log says when it has ended.
            async def follow_lines() -> None:
                async for lines, _ in client.follow_lines(
                    full, task, index, attempt, every=LINES_INTERVAL
                ):
                    show(lines)

            if not runs_in_home(settings_from(home=home)):
                await follow_lines()  # coordinators drive the run: one stopping hands it on
                return
            following = asyncio.ensure_future(follow_lines())
            abandoned = asyncio.ensure_future(_abandoned(client, home, full))
            try:
                done, _ = await asyncio.wait([following, abandoned], return_when=FIRST_COMPLETED)
            finally:
                abandoned.cancel()
                following.cancel()
            if following in done:
                return following.result()
            raise ConveyorError(f"run {full} is not running: {_ended_first(full[:12])}")

        _read(home, read)

    async def _abandoned(client: Client, home: Path, run_id: str) -> None:
        """Returns once no process of the local home drives the unfinished run: its own
        process was killed, say. A follow of it would wait for an end that never comes."""
        while True:
            await asyncio.sleep(DRIVER_LOOK)
            if _stalled(home, [run_id]):
                # A driver lets go only after the run's end is in its log.
                if not (await client.state(run_id)).finished:
                    return
                await asyncio.Event().wait()  # ended: the follow ends by itself

    def _stalled(home: Path, running: list[str]) -> set[str]:
        """Of the unfinished runs of a local home, those no process drives: a run's own
        process was killed, say. (On the distributed engine any coordinator drives it.)"""
        if not runs_in_home(settings_from(home=home)):
            return set()
        return {run_id for run_id in running if run_driver(home, run_id) is None}

    def _ended_first(run: str) -> str:
        return f"the process that ran it ended first (killed?); `conveyor resume {run}` finishes it"

    def _whose(run: str, task: str | None, index: int | None, attempt: int | None) -> str:
        """Whose lines were asked for, in words."""
        if task is None:
            whose = f"the steps of run {run}"
        else:
            whose = f"task {task!r}" if index is None else f"item {index} of task {task!r}"
        return whose if attempt is None else f"{whose} (attempt {attempt})"

    @app.command()
    def events(run_id: RunArgument, home: HomeOption = DEFAULT_HOME) -> None:
        """Print a run's raw event log as JSON lines (for debugging and audits)."""

        async def read(client: Client) -> None:
            # A page at a time: a million-item run's log is three million events.
            async for page in client.event_pages(await client.find(run_id)):
                sys.stdout.writelines(
                    json.dumps(to_builtins(e), separators=(",", ":")) + "\n" for e in page
                )

        _read(home, read)

    artifact_app = typer.Typer(help="Fetch artifacts of runs.", no_args_is_help=True)
    app.add_typer(artifact_app, name="artifact")

    @app.command()
    def artifacts(
        run_id: RunArgument,
        task: Annotated[str | None, typer.Argument(help="Only this task.")] = None,
        as_json: JsonOption = False,
        home: HomeOption = DEFAULT_HOME,
    ) -> None:
        """List the artifacts a run's tasks produced (name, item, size, sha256, where)."""
        rows = _artifact_rows(_read(home, lambda c: c.state(run_id)), task)
        if as_json:
            write_json(rows)
            return
        if not rows:
            say("no artifacts" + (f" of task {task!r}" if task else ""))
            return
        table = Table()
        for column in ("task", "item", "name", "kind", "size", "sha256", "uri"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(
                row["task"],
                str(row["index"]),
                row["name"],
                row["kind"],
                str(row["size"]),
                row["sha256"][:12],
                row["uri"],
            )
        out.print(table)

    @artifact_app.command("get")
    def artifact_get(
        run_id: RunArgument,
        task: Annotated[str, typer.Argument(help="The task that produced it.")],
        name: Annotated[str, typer.Argument(help="Output artifact name.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
        index: Annotated[int, typer.Option(help="Item of a fan-out task.")] = 0,
        home: HomeOption = DEFAULT_HOME,
    ) -> None:
        """Fetch one artifact (a directory artifact is written as a directory)."""
        rows = _artifact_rows(_read(home, lambda c: c.state(run_id)), task)
        matches = [r for r in rows if r["name"] == name and r["index"] == index]
        if not matches:
            raise fail_input(NotFound(f"no artifact {name!r} of task {task!r} item {index}"))
        ref = msgspec.convert(
            {k: matches[0][k] for k in ("uri", "size", "sha256", "kind")}, ArtifactRef
        )
        store = open_artifacts(settings_from(home=home))
        try:
            loop.run(store.get_path(ref, output))
        except ConveyorError as exc:
            raise fail_input(exc) from None
        say(f"{output} ({ref.size} bytes, sha256 {ref.sha256[:12]})")


def _artifact_rows(state: RunState, task: str | None) -> list[dict[str, Any]]:
    rows = []
    for node in state.nodes.values():
        if task is not None and node.spec.name != task:
            continue
        for index, inst in enumerate(node.instances):
            for name, ref in (inst.artifacts or {}).items():
                rows.append({"task": node.spec.name, "index": index, "name": name, **ref})
    return rows
