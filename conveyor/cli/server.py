"""``conveyor server`` and the commands around triggers: apply, schedules, backfill and
trigger-log."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.table import Table

from contracts.durations import duration_text
from contracts.errors import InvalidInput, NotFound, Problem
from conveyor import loop, wiring
from conveyor.addresses import is_loopback
from conveyor.cli.common import (
    DEFAULT_HOME,
    EXIT_FAILED,
    AmqpOption,
    HomeOption,
    JsonOption,
    RedisOption,
    WorkflowTarget,
    fail_input,
    load_target,
    out,
    say,
    settings_from,
    write_json,
)
from conveyor.cli.server_process import REQUESTS_GRACE, StopSignals, web_server
from conveyor.preflight import step_import_paths, use_import_paths
from conveyor.progress import counted
from conveyor.report import when
from conveyor.server.auth import Scope, Tokens
from conveyor.settings import Settings
from engine.triggers.firing import encode_arrival
from engine.triggers.registry import Registry, Served
from engine.triggers.schedule import Schedule
from engine.triggers.scheduler import cursor_key, read_cursor, tick_arrival

T = TypeVar("T")


token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.command()(server)
    app.command()(apply)
    app.command()(schedules)
    app.command()(backfill)
    app.command("trigger-log")(trigger_log)


def server(
    workflows: Annotated[
        Path | None,
        typer.Option("--workflows", help="Folder of workflow files to serve (re-read on change)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")
    ] = 8080,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=1, help="Steps run at once (embedded).")
    ] = None,
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Serve webhooks, schedules, queue sources and sensors.

    Without CONVEYOR_AMQP_URL/CONVEYOR_REDIS_URL everything runs in this process (runs
    kept under --home); with them it is a front end to the distributed engine, and
    several replicas may run at once.
    """
    import uvicorn

    from conveyor.server.app import create_app
    from conveyor.server.home import serving

    settings = settings_from(amqp_url=amqp_url, redis_url=redis_url, home=home)
    # Python steps run here (embedded) and Python sensors import from the workflows'
    # folder first, then CONVEYOR_PYTHON_PATH, then the current directory.
    folder = [str(workflows.resolve())] if workflows is not None else []
    use_import_paths([*folder, *step_import_paths(None)])
    is_distributed = wiring.distributed(settings)
    mode = "distributed" if is_distributed else f"embedded (runs kept in {home})"

    async def go() -> str | None:
        stop_signals = StopSignals(
            "finishing the requests in flight"
            if is_distributed
            else f"running steps get up to {settings.worker_grace:g}s to finish"
        )
        try:
            return await serve(stop_signals)
        except asyncio.CancelledError:
            if stop_signals.cancelled_start:
                return None  # stopped while starting, as asked
            raise

    async def serve(stop_signals: StopSignals) -> str | None:
        async with serving(
            settings,
            workflows_dir=workflows,
            workers=workers,
            worker_grace=settings.worker_grace,
        ) as runtime:
            has_tokens = await Tokens(runtime.store).any_active()
            if not has_tokens and not is_loopback(host):
                raise InvalidInput(
                    [
                        Problem(
                            f"refusing to listen on {host} with an open API: make a token first"
                            " (conveyor token create --scope admin), or listen on 127.0.0.1"
                        )
                    ],
                    source="--host",
                )
            open_access = not has_tokens and not is_distributed
            app = create_app(
                runtime,
                open_access=open_access,
                distributed=is_distributed,
                artifacts=runtime.artifacts,
                max_request_bytes=settings.max_request_bytes,
            )
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=REQUESTS_GRACE,
            )
            web = web_server(config)
            say(f"conveyor server on http://{host}:{port} · {mode}")
            say(f"serving: {', '.join(runtime.registry.names()) or 'no workflows yet'}")
            if settings.retention is not None:
                kept = duration_text(settings.retention)
                say(f"runs are deleted {kept} after they end (CONVEYOR_RETENTION)")
            if open_access:
                say("the API and UI are open (no token made; loopback only): conveyor token create")
            elif not has_tokens:
                say("the API needs a token and none is made: conveyor token create --scope admin")

            def failed(_reason: str) -> None:
                runtime.stopping.set()
                web.should_exit = True  # as on SIGTERM: finish the requests in flight

            runtime.supervisor.on_failure(failed)
            stop_signals.stop(web, runtime)
            await web.serve()
            return runtime.supervisor.failure

    try:
        failure = loop.run(go())
    except InvalidInput as exc:
        raise fail_input(exc) from None
    if failure is not None:
        # Its schedules, sensors or runs would stop moving while it answered HTTP: exit
        # for the supervisor (systemd, Kubernetes) to start it again.
        say(f"stopped: {failure}")
        raise typer.Exit(EXIT_FAILED)


def _with_registry(settings: Settings, job: Callable[[Registry], Awaitable[T]]) -> T:
    async def go() -> T:
        store = wiring.open_trigger_store(settings)
        try:
            registry = Registry(store)
            await registry.refresh()
            return await job(registry)
        finally:
            await store.close()

    try:
        return loop.run(go())
    except InvalidInput as exc:
        raise fail_input(exc) from None


def apply(
    target: WorkflowTarget,
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Register a workflow (a new version if it changed) with the servers of this home."""
    try:
        workflow = load_target(target)
    except InvalidInput as exc:
        raise fail_input(exc) from None
    settings = settings_from(amqp_url=amqp_url, redis_url=redis_url, home=home)
    version = _with_registry(settings, lambda registry: registry.register(workflow))
    triggers = ", ".join(f"{t.name} ({t.kind})" for t in workflow.triggers) or "none"
    say(f"{workflow.name}: version {version} registered; triggers: {triggers}")


def schedules(
    as_json: JsonOption = False,
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Every schedule: its next and last fire, and its latest decision (why it did not
    fire, when it did not)."""
    settings = settings_from(amqp_url=amqp_url, redis_url=redis_url, home=home)

    async def rows(registry: Registry) -> list[dict[str, Any]]:
        found = []
        now = datetime.now(UTC)
        store = registry.store
        for served in registry.served("schedule"):
            spec = served.trigger.schedule
            assert spec is not None
            key = cursor_key(served.workflow.name, served.trigger.name)
            cursor = read_cursor(await store.cursor(key))
            latest = await store.records(served.workflow.name, served.trigger.name, limit=1)
            found.append(
                {
                    "workflow": served.workflow.name,
                    "trigger": served.trigger.name,
                    "schedule": spec.cron or f"every {spec.every:g}s",
                    "timezone": spec.timezone,
                    "next": next(Schedule.of(spec).fires(now)).isoformat(),
                    "last_fire": _stamp(cursor.last_fire) if cursor else None,
                    "last_run": cursor.last_run if cursor else None,
                    "latest": (
                        f"{latest[0].decision} {latest[0].key}: {latest[0].reason}".strip(": ")
                        if latest
                        else None
                    ),
                }
            )
        return found

    found = _with_registry(settings, rows)
    if as_json:
        write_json(found)
        return
    if not found:
        say("no schedules registered")
        return
    table = Table("workflow", "trigger", "schedule", "next", "last fire", "latest decision")
    for row in found:
        table.add_row(
            row["workflow"],
            row["trigger"],
            f"{row['schedule']} ({row['timezone']})",
            row["next"],
            row["last_fire"] or "never",
            row["latest"] or "",
        )
    out.print(table)


def _stamp(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def _time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise fail_input(
            InvalidInput([Problem(f"not an ISO 8601 time: {text!r}")], source=option)
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def backfill(
    workflow: Annotated[str, typer.Argument(help="Registered workflow.")],
    trigger: Annotated[str, typer.Argument(help="Its schedule trigger.")],
    start: Annotated[str, typer.Option("--from", help="First nominal time (ISO 8601).")],
    end: Annotated[str, typer.Option("--to", help="Last nominal time (ISO 8601).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--no-dry-run", help="Only show the runs.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most runs.")] = 1000,
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Fire a schedule for each of its nominal times in a range (each gets the run id its
    scheduled fire would have had, so a time that already ran is not run twice)."""
    settings = settings_from(amqp_url=amqp_url, redis_url=redis_url, home=home)
    first, last = _time(start, "--from"), _time(end, "--to")
    if last < first:
        raise fail_input(InvalidInput([Problem("--to is before --from")]))

    async def go(registry: Registry) -> list[tuple[str, str, bool]]:
        latest = registry.latest(workflow)
        served = None
        if latest is not None:
            version, spec = latest
            for candidate in spec.triggers:
                if candidate.name == trigger and candidate.schedule is not None:
                    served = Served(spec, version, candidate)
        if served is None or served.trigger.schedule is None:
            raise InvalidInput([Problem(f"no schedule trigger {workflow}/{trigger} registered")])
        schedule = Schedule.of(served.trigger.schedule)
        times: list[datetime] = []
        for nominal in schedule.fires(first - timedelta(microseconds=1)):
            if nominal > last or len(times) >= limit:
                break
            times.append(nominal)
        store = registry.store
        result = []
        now = datetime.now(UTC).timestamp()
        for nominal in times:
            arrival = tick_arrival(served, nominal, now, origin="conveyor backfill")
            if dry_run:
                result.append((arrival.key, arrival.run_id, False))
                continue
            admitted = await store.admit(
                arrival.idempotency_key, encode_arrival(arrival), keep=7 * 86400
            )
            result.append((arrival.key, arrival.run_id, admitted))
        return result

    rows = _with_registry(settings, go)
    for nominal, run_id, admitted in rows:
        note = "" if dry_run else ("queued" if admitted else "already fired")
        say(f"{nominal}  {run_id}  {note}".rstrip())
    queued = sum(1 for _, _, admitted in rows if admitted)
    if dry_run:
        say(f"{counted(len(rows), 'run')} would be started (dry run: nothing was)")
    else:
        ran = len(rows) - queued
        say(f"{counted(queued, 'run')} queued for the server to start; {ran} had run already")


def trigger_log(
    workflow: Annotated[str, typer.Argument(help="Registered workflow.")],
    trigger: Annotated[str | None, typer.Argument(help="One of its triggers.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="Most decisions shown, newest first.")
    ] = 50,
    as_json: JsonOption = False,
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """What arrived for a workflow's triggers and what was decided: accepted, duplicate,
    filtered, rejected (and why), fired, skipped (and why)."""
    settings = settings_from(amqp_url=amqp_url, redis_url=redis_url, home=home)

    async def go(registry: Registry) -> list[Any]:
        return await registry.store.records(workflow, trigger, limit=limit)

    records = _with_registry(settings, go)
    if as_json:
        write_json([msgspec.to_builtins(r) for r in records])
        return
    table = Table("at", "trigger", "decision", "key", "run", "reason")
    for r in records:
        table.add_row(
            when(r.at),
            r.trigger,
            r.decision,
            (r.key or "")[:40],
            (r.run_id or "")[:12],
            r.reason,
        )
    out.print(table)


@token_app.command("create")
def token_create(
    scope: Annotated[str, typer.Option("--scope", help="read, run or admin.")] = "read",
    name: Annotated[str, typer.Option("--name", help="Who or what holds it.")] = "token",
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Make an API token; it is shown once (only its hash is kept)."""
    settings = settings_from(amqp_url=amqp_url, redis_url=redis_url, home=home)
    try:
        level = Scope.parse(scope)
    except InvalidInput as exc:
        raise fail_input(exc) from None
    token = _with_registry(settings, lambda registry: Tokens(registry.store).create(name, level))
    say(token)


@token_app.command("list")
def token_list(
    amqp_url: AmqpOption = None, redis_url: RedisOption = None, home: HomeOption = DEFAULT_HOME
) -> None:
    """The tokens made (never their secrets)."""
    settings = settings_from(amqp_url=amqp_url, redis_url=redis_url, home=home)
    tokens = _with_registry(settings, lambda registry: Tokens(registry.store).all())
    if not tokens:
        say("no tokens made: conveyor token create --scope admin")
    for token in tokens:
        state = "revoked" if token.revoked is not None else "active"
        say(f"{token.id}  {token.scope:<5}  {state:<7}  {token.name}")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="From conveyor token list.")],
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Revoke a token at once (servers check tokens on every request)."""
    settings = settings_from(amqp_url=amqp_url, redis_url=redis_url, home=home)
    try:
        _with_registry(settings, lambda registry: Tokens(registry.store).revoke(token_id))
    except NotFound as exc:
        raise fail_input(exc) from None
    say(f"revoked {token_id}")
