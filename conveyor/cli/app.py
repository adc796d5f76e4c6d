"""The ``conveyor`` command line: the composition root that builds adapters and runs things.

Exit codes: 0 success, 1 the run failed or was cancelled, 2 invalid input.
Commands live by concern: running and checking workflows here, reading runs in
``inspect``, the distributed engine's processes and run control in ``distributed``.
All of them reach runs through the one client (``engine.client``).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import json
import os
import sys
from typing import Annotated

import typer

from contracts.errors import ConveyorError, InvalidInput, NotFound
from contracts.ports import TriggerRecord
from contracts.spec import json_schema
from contracts.validation import raw_splices
from contracts.vocabulary import RunStatus
from conveyor import loop, preflight, telemetry
from conveyor.cli import control, distributed, inspect, keys, retention, signals
from conveyor.cli import server as serving
from conveyor.cli.common import (
    DEFAULT_HOME,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RUN_FAILED,
    HomeOption,
    JsonOption,
    ParamOption,
    ParamsFileOption,
    WorkflowTarget,
    err,
    fail_input,
    load_for_run,
    load_target,
    out,
    print_error,
    say,
    say_notified,
    say_notify_wait,
    settings_from,
    write_json,
)
from conveyor.local import drive, engine_for_run
from conveyor.logsetup import LogFormat, configure_logging
from conveyor.preflight import step_import_paths, use_import_paths
from conveyor.progress import LiveProgress, counted, summary
from conveyor.report import run_report
from conveyor.wiring import open_artifacts
from engine.runids import new_run_id
from engine.state.model import RunState

app = typer.Typer(
    name="conveyor",
    help="Conveyor: run DAG workflows of script, command and Python steps, with no servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown joins a docstring's wrapped lines into paragraphs; Rich's mode would break
    # the help wherever the source's lines end.
    rich_markup_mode="markdown",
)


def _print_version(asked: bool) -> None:
    if asked:
        say(f"conveyor {importlib.metadata.version('conveyor')}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
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
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    if log_format not in ("auto", "console", "json"):
        raise typer.BadParameter("use auto, console or json", param_hint="--log-format")
    fmt: LogFormat = log_format  # type: ignore[assignment]
    configure_logging(log_level, fmt)
    provider = telemetry.configure(ctx.invoked_subcommand or "cli")
    if provider is not None:
        atexit.register(provider.shutdown)  # exported before the process ends


@app.command()
def run(
    file: WorkflowTarget,
    param: ParamOption = None,
    params_file: ParamsFileOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, help="Steps run at once (default: CPU count + 4, at most 32)."
        ),
    ] = None,
    as_json: JsonOption = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Run a workflow here and now (embedded: no servers), with live progress.

    Ctrl-C cancels the run (its steps are killed; exit 130); a second Ctrl-C exits at
    once. A run whose process died is finished by ``conveyor resume``.
    """
    settings = settings_from(home=home)
    # Python steps import from the workflow's folder first, then CONVEYOR_PYTHON_PATH,
    # then the current directory.
    use_import_paths(step_import_paths(file if file.is_file() else None))
    try:
        workflow, params = load_for_run(file, param or [], params_file)
        preflight.check(workflow, str(file))
        open_artifacts(settings)
    except InvalidInput as exc:
        raise fail_input(exc) from None
    if not home.exists():
        sys.stderr.write(f"creating the local home {home} (runs are kept there)\n")

    def interrupted(word: str) -> None:
        err.print(f"{word}: cancelling the run (Ctrl-C again to quit at once)")

    run_id = new_run_id()

    async def go() -> tuple[RunState, int | None, list[TriggerRecord]]:
        async with engine_for_run(
            settings, run_id, workflow, workers=workers, waiting=say_notify_wait
        ) as (engine, notices):

            async def start() -> int:
                await engine.submit(workflow, params, run_id=run_id)
                return -1

            with contextlib.nullcontext() if as_json else LiveProgress(err) as progress:
                state, stopped_with = await drive(
                    engine,
                    home,
                    run_id,
                    start,
                    observer=progress,
                    on_interrupt=interrupted,
                    notices=notices,
                )
            return state, stopped_with, notices.outcomes if notices else []

    state, stopped_with, outcomes = loop.run(go())
    if as_json:
        report = run_report(state)
        if workflow.notify:
            report["notified"] = [
                {"decision": r.decision, "reason": r.reason, "key": r.key} for r in outcomes
            ]
        write_json(report)
    else:
        out.print(summary(state))
        say_notified(outcomes)
        say(f"inspect: conveyor show {state.run_id[:12]} · conveyor logs {state.run_id[:12]}")
    if stopped_with is not None:
        raise typer.Exit(stopped_with)
    raise typer.Exit(EXIT_OK if state.status == RunStatus.SUCCEEDED else EXIT_RUN_FAILED)


@app.command()
def export(
    target: WorkflowTarget,
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
def validate(
    file: WorkflowTarget, param: ParamOption = None, params_file: ParamsFileOption = None
) -> None:
    """Check a workflow file without running anything (and what it needs here: artifact
    filesystems, Python step modules); with -p or -f, the parameters a run would get."""
    use_import_paths(step_import_paths(file if file.is_file() else None))
    try:
        if param or params_file is not None:
            workflow, _ = load_for_run(file, param or [], params_file)
        else:
            workflow = load_target(file)
        preflight.check(workflow, str(file))
    except InvalidInput as exc:
        raise fail_input(exc) from None
    spliced = raw_splices(workflow)
    if spliced:
        say(f"values spliced into code on purpose (raw): {len(spliced)}")
        for place in spliced:
            say(f"  {place}")
    say(f"{file}: ok (workflow {workflow.name!r}, {counted(len(workflow.tasks), 'task')})")


@app.command()
def schema() -> None:
    """Print the JSON Schema of workflow files (for editor completion and checks)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


inspect.register(app)
control.register(app)
distributed.register(app)
serving.register(app)
signals.register(app)
retention.register(app)
keys.register(app)


def _redis_unreachable() -> tuple[type[Exception], ...]:
    """The Redis client's errors for a server that does not answer. Only commands that
    use Redis load the client: if it is not loaded, none of them was raised."""
    errors = sys.modules.get("redis.exceptions")
    if errors is None:
        return ()
    # No node of a Redis Cluster answered (its own class, not a ConnectionError).
    cluster = getattr(errors, "RedisClusterUnreachableError", errors.ConnectionError)
    return (errors.ConnectionError, errors.TimeoutError, cluster)


def main() -> None:
    # Everything Conveyor writes (run store, logs, artifacts, scratch) is the user's
    # alone: run logs hold parameters and results.
    os.umask(0o077)
    try:
        app()
    except ConveyorError as exc:
        print_error(exc)
        sys.exit(EXIT_INVALID if isinstance(exc, InvalidInput | NotFound) else EXIT_RUN_FAILED)
    except _redis_unreachable() as exc:
        # A command reading runs from a Redis that does not answer (services wait).
        sys.stderr.write(f"error: Redis not reachable: {exc}\n")
        sys.exit(EXIT_RUN_FAILED)
