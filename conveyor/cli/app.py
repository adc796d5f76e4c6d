"""The ``conveyor`` command line: the composition root that builds adapters and runs things.

Exit codes: 0 success, 1 the run failed or was cancelled, 2 invalid input.
Commands live by concern: running and checking workflows here, reading runs in
``inspect``, the distributed engine's processes and run control in ``distributed``.
All of them reach runs through the one client (``engine.client``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from contracts.errors import ConveyorError, InvalidInput, NotFound
from contracts.spec import Workflow
from contracts.vocabulary import RunStatus
from conveyor import loop
from conveyor.cli import distributed, inspect
from conveyor.cli.common import (
    DEFAULT_HOME,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RUN_FAILED,
    HomeOption,
    err,
    fail_input,
    load_for_run,
    load_target,
    out,
    print_error,
)
from conveyor.embedded import EmbeddedEngine, default_worker_count
from conveyor.logsetup import LogFormat, configure_logging
from conveyor.progress import LiveProgress, summary
from conveyor.report import run_report
from conveyor.settings import Settings
from engine.runlog.sqlite import SqliteRunLog
from workers.artifacts import FsspecArtifactStore

app = typer.Typer(
    name="conveyor",
    help="Conveyor: run DAG workflows of script, command and Python steps, with no servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
        raise fail_input(exc) from None
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

    state = loop.run(go())
    if as_json:
        out.print_json(data=run_report(state))
    else:
        out.print(summary(state))
        out.print(f"inspect: conveyor show {state.run_id[:12]} · conveyor logs {state.run_id[:12]}")
    raise typer.Exit(EXIT_OK if state.status == RunStatus.SUCCEEDED else EXIT_RUN_FAILED)


@app.command()
def export(
    target: Annotated[Path, typer.Argument(metavar="MODULE:WORKFLOW", help="A Python workflow.")],
) -> None:
    """Print a workflow (e.g. one written in Python) as YAML."""
    import yaml

    try:
        workflow = load_target(target)
    except InvalidInput as exc:
        raise fail_input(exc) from None
    data = workflow.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Workflow YAML file.")]) -> None:
    """Check a workflow file without running anything."""
    try:
        workflow = load_target(file)
    except InvalidInput as exc:
        raise fail_input(exc) from None
    out.print(f"{file}: ok (workflow {workflow.name!r}, {len(workflow.tasks)} tasks)")


@app.command()
def schema() -> None:
    """Print the JSON Schema of workflow files (for editor completion and checks)."""
    document = Workflow.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


inspect.register(app)
distributed.register(app)


def main() -> None:
    try:
        app()
    except ConveyorError as exc:
        print_error(exc)
        sys.exit(EXIT_INVALID if isinstance(exc, InvalidInput | NotFound) else EXIT_RUN_FAILED)
