"""The ``conveyor`` command line: the composition root that builds adapters and runs things.

Exit codes: 0 success, 1 the run failed or was cancelled, 2 invalid input.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from contracts.codec import to_builtins
from contracts.errors import ConveyorError, InvalidInput, NotFound, Problem
from contracts.ports import RunStore
from contracts.spec import Workflow
from contracts.validation import load_workflow, resolve_params
from engine import loop
from engine.cli_cluster import register as register_cluster_commands
from engine.cluster import open_store
from engine.embedded import EmbeddedEngine, default_worker_count
from engine.logging import LogFormat, configure_logging
from engine.progress import LiveProgress, summary
from engine.report import run_report
from engine.runlog.sqlite import SqliteRunLog
from engine.settings import Settings
from engine.state import replay
from workers.artifacts import FsspecArtifactStore

EXIT_OK, EXIT_RUN_FAILED, EXIT_INVALID = 0, 1, 2

app = typer.Typer(
    name="conveyor",
    help="Conveyor: run DAG workflows of script, command and Python steps, with no servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

T = TypeVar("T")

HomeOption = Annotated[
    Path,
    typer.Option(
        "--home",
        envvar="CONVEYOR_HOME",
        help="Directory of the local run store (embedded mode).",
        show_default=True,
    ),
]
DEFAULT_HOME = Path(".conveyor")


@app.callback()
def main_options(
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level", envvar="CONVEYOR_LOG_LEVEL", help="debug, info, warning, error."
        ),
    ] = "warning",
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format", help="auto (console on a terminal, else JSON), console, json."
        ),
    ] = "auto",
) -> None:
    if log_format not in ("auto", "console", "json"):
        raise typer.BadParameter("use auto, console or json", param_hint="--log-format")
    fmt: LogFormat = log_format  # type: ignore[assignment]
    configure_logging(log_level, fmt)


def _store(home: Path) -> RunStore:
    """Redis when ``CONVEYOR_REDIS_URL`` is set (the distributed engine), else the local file."""
    return open_store(Settings(home=home))


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    return loop.run(coro)


def _print_error(exc: ConveyorError) -> None:
    # Plain writes: error lines must not be wrapped, so they can be grepped and clicked.
    lines = exc.message.splitlines() or [type(exc).__name__]
    if len(lines) == 1:
        sys.stderr.write(f"error: {lines[0]}\n")
    else:
        sys.stderr.write(
            f"error: {len(lines)} problems\n" + "".join(f"  {line}\n" for line in lines)
        )


def _fail_input(exc: ConveyorError) -> typer.Exit:
    _print_error(exc)
    return typer.Exit(EXIT_INVALID)


def parse_param_args(values: list[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    problems = []
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            problems.append(Problem(f"expected key=value, got {raw!r}", path="-p"))
            continue
        given[key.strip()] = value
    if problems:
        raise InvalidInput(problems, source="command line")
    return given


def load_target(target: Path) -> Workflow:
    """A workflow from a YAML file, or from ``module:attribute`` (a Python workflow)."""
    text = str(target)
    if target.exists() or ":" not in text or text.endswith((".yaml", ".yml")):
        return load_workflow(target)
    module_name, _, attribute = text.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary code; report whatever it raised
        raise InvalidInput(
            [Problem(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}")], source=text
        ) from exc
    found = getattr(module, attribute, None)
    spec = getattr(found, "spec", found)
    if not isinstance(spec, Workflow):
        raise InvalidInput(
            [Problem(f"{text} is not a workflow (decorate it with @conveyor.workflow)")],
            source=text,
        )
    return spec


def load_for_run(file: Path, params: list[str]) -> tuple[Workflow, dict[str, Any]]:
    workflow = load_target(file)
    values = resolve_params(workflow, parse_param_args(params), from_text=True, source="-p")
    return workflow, values


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Workflow YAML file, or module:workflow.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Parameter override, key=value (repeatable)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, help="Steps run at once (default: CPU count + 4, at most 32)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable result only.")
    ] = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Run a workflow here and now (embedded: no servers), with live progress."""
    try:
        workflow, params = load_for_run(file, param or [])
    except InvalidInput as exc:
        raise _fail_input(exc) from None
    # Python steps import their modules relative to the workflow and the current directory.
    for path in (str(file.resolve().parent), os.getcwd()):
        if path not in sys.path:
            sys.path.insert(0, path)

    async def go() -> Any:
        store = SqliteRunLog(home / "conveyor.db")  # `run` is always embedded
        try:
            settings = Settings(home=home)
            artifacts = FsspecArtifactStore(
                settings.artifact_store_url(), max_bytes=settings.artifact_max_bytes
            )
            async with EmbeddedEngine(
                store, workers=workers or default_worker_count(), artifacts=artifacts
            ) as engine:
                if as_json:
                    return await engine.run(workflow, params)
                with LiveProgress(err) as progress:
                    return await engine.run(workflow, params, observer=progress)
        finally:
            await store.close()

    state = _run_async(go())
    if as_json:
        out.print_json(data=run_report(state))
    else:
        out.print(summary(state))
        out.print(f"inspect: conveyor show {state.run_id[:12]} · conveyor logs {state.run_id[:12]}")
    raise typer.Exit(EXIT_OK if state.status == "succeeded" else EXIT_RUN_FAILED)


@app.command()
def export(
    target: Annotated[Path, typer.Argument(metavar="MODULE:WORKFLOW", help="A Python workflow.")],
) -> None:
    """Print a workflow (e.g. one written in Python) as YAML."""
    import yaml

    try:
        workflow = load_target(target)
    except InvalidInput as exc:
        raise _fail_input(exc) from None
    data = workflow.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Workflow YAML file.")]) -> None:
    """Check a workflow file without running anything."""
    try:
        workflow = load_target(file)
    except InvalidInput as exc:
        raise _fail_input(exc) from None
    out.print(f"{file}: ok (workflow {workflow.name!r}, {len(workflow.tasks)} tasks)")


@app.command()
def schema() -> None:
    """Print the JSON Schema of workflow files (for editor completion and checks)."""
    document = Workflow.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@app.command()
def runs(
    state: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """List recent runs, newest first."""

    async def go() -> Any:
        store = _store(home)
        try:
            return await store.runs(state=state, workflow=workflow, limit=limit)
        finally:
            await store.close()

    rows = _run_async(go())
    if as_json:
        out.print_json(data=to_builtins(rows))
        return
    table = Table()
    for column in ("run", "workflow", "state", "submitted", "duration"):
        table.add_column(column)
    from datetime import UTC, datetime

    for row in rows:
        when = datetime.fromtimestamp(row.submitted_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        took = f"{row.finished_at - row.submitted_at:.2f}s" if row.finished_at else ""
        table.add_row(row.run_id[:12], row.workflow, row.state, when, took)
    out.print(table)


def _read_events(home: Path, run_id: str) -> tuple[str, list[Any]]:
    async def go() -> tuple[str, list[Any]]:
        store = _store(home)
        try:
            full = await store.find_run(run_id)
            return full, await store.read(full)
        finally:
            await store.close()

    try:
        return _run_async(go())
    except NotFound as exc:
        raise _fail_input(exc) from None


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id or a unique prefix.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Show a run: tasks, states, attempts, durations, outputs."""
    _full, events = _read_events(home, run_id)
    state = replay(events)
    if as_json:
        out.print_json(data=run_report(state))
    else:
        out.print(summary(state))


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id or a unique prefix.")],
    task: Annotated[str | None, typer.Argument(help="Only this task.")] = None,
    attempt: Annotated[int | None, typer.Option(help="Only this attempt.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")
    ] = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Print the output lines of a run's steps, per task attempt."""

    def show(lines: list[Any]) -> None:
        for line in lines:
            if attempt is not None and line.attempt != attempt:
                continue
            label = f"{line.task}[{line.index}]#{line.attempt}"
            sys.stdout.write(f"{label} {line.stream}| {line.text}\n")
        sys.stdout.flush()

    async def go() -> None:
        store = _store(home)
        try:
            full = await store.find_run(run_id)
            printed: set[tuple[Any, ...]] = set()
            while True:
                finished = replay(await store.read(full)).finished if follow else True
                lines = await store.read_lines(full, task)
                fresh = [ln for ln in lines if _line_key(ln) not in printed]
                printed.update(_line_key(ln) for ln in fresh)
                show(fresh)
                if finished:
                    return
                await asyncio.sleep(0.5)
        finally:
            await store.close()

    try:
        _run_async(go())
    except NotFound as exc:
        raise _fail_input(exc) from None


def _line_key(line: Any) -> tuple[Any, ...]:
    return (line.task, line.index, line.attempt, line.stream, line.at, line.text)


@app.command()
def events(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id or a unique prefix.")],
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Print a run's raw event log as JSON lines (for debugging and audits)."""
    _full, items = _read_events(home, run_id)
    for event in items:
        sys.stdout.write(json.dumps(to_builtins(event), separators=(",", ":")) + "\n")


artifact_app = typer.Typer(help="Fetch artifacts of runs.", no_args_is_help=True)
app.add_typer(artifact_app, name="artifact")


@app.command()
def artifacts(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id or a unique prefix.")],
    task: Annotated[str | None, typer.Argument(help="Only this task.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """List the artifacts a run's tasks produced (name, item, size, sha256, where)."""
    _full, events = _read_events(home, run_id)
    rows = _artifact_rows(replay(events), task)
    if as_json:
        out.print_json(data=rows)
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


def _artifact_rows(state: Any, task: str | None) -> list[dict[str, Any]]:
    rows = []
    for node in state.nodes.values():
        if task is not None and node.spec.name != task:
            continue
        for index, inst in enumerate(node.instances):
            for name, ref in (inst.artifacts or {}).items():
                rows.append({"task": node.spec.name, "index": index, "name": name, **ref})
    return rows


@artifact_app.command("get")
def artifact_get(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    task: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Argument(help="Output artifact name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
    index: Annotated[int, typer.Option(help="Item of a fan-out task.")] = 0,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Fetch one artifact (a directory artifact is written as a directory)."""
    import msgspec

    from contracts.events import ArtifactRef

    _full, events = _read_events(home, run_id)
    matches = [
        r for r in _artifact_rows(replay(events), task) if r["name"] == name and r["index"] == index
    ]
    if not matches:
        raise _fail_input(NotFound(f"no artifact {name!r} of task {task!r} item {index}"))
    ref = msgspec.convert(
        {k: matches[0][k] for k in ("uri", "size", "sha256", "kind")}, ArtifactRef
    )
    settings = Settings(home=home)
    store = FsspecArtifactStore(
        settings.artifact_store_url(), max_bytes=settings.artifact_max_bytes
    )
    try:
        _run_async(store.get_path(ref, output))
    except ConveyorError as exc:
        raise _fail_input(exc) from None
    out.print(f"{output} ({ref.size} bytes, sha256 {ref.sha256[:12]})")


register_cluster_commands(app, out, err, _fail_input)


def main() -> None:
    try:
        app()
    except ConveyorError as exc:
        _print_error(exc)
        sys.exit(EXIT_INVALID if isinstance(exc, InvalidInput | NotFound) else EXIT_RUN_FAILED)
