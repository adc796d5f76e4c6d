"""``conveyor`` commands of the distributed engine: its processes, and starting and
steering runs on it through the client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NamedTuple

import typer

from contracts.errors import InvalidInput, Problem
from contracts.modelbase import NAME_PATTERN
from contracts.ports import RunStore
from contracts.signing import Role
from contracts.spec import STEP_PATH_VARIABLE
from contracts.supervision import Supervisor
from contracts.topology import ShardMap
from contracts.vocabulary import RunStatus
from conveyor import loop
from conveyor import wiring as cluster
from conveyor.cli.common import (
    EXIT_FAILED,
    STOP_SIGNALS,
    AmqpOption,
    ParamOption,
    ParamsFileOption,
    RedisOption,
    ShardsOption,
    WorkflowTarget,
    err,
    fail_input,
    load_for_run,
    out,
    say,
    settings_from,
    write_json,
)
from conveyor.metrics import RunMetrics, TimedRunLog, watch_queues, worker_slots
from conveyor.metricsport import TOKEN_VARIABLE, MetricsPort, check_metrics_address
from conveyor.preflight import step_import_paths, use_import_paths
from conveyor.progress import LiveProgress, summary
from conveyor.report import run_report
from conveyor.settings import Settings

MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        envvar="CONVEYOR_METRICS_PORT",
        min=1,
        max=65535,
        help="Serve Prometheus metrics on this port.",
    ),
]
MetricsAddressOption = Annotated[
    str,
    typer.Option(
        "--metrics-address",
        envvar="CONVEYOR_METRICS_ADDRESS",
        help="Address the metrics port listens on; beyond loopback it needs"
        f" {TOKEN_VARIABLE} set (the token scrapers send).",
    ),
]


def _metrics_port(port: int | None, address: str) -> MetricsPort | None:
    return None if port is None else MetricsPort(port, address, os.environ.get(TOKEN_VARIABLE, ""))


async def _slots(worker: Any, pool: str, total: int) -> None:
    while True:
        worker_slots(pool, worker.busy, total)
        await asyncio.sleep(1.0)


class StopRequests:
    """The stop signals of a coordinator or worker, heard from when it has connected.

    The first asks it to stop (once its service has started, if it is still starting).
    A second hands a worker's running steps back at once (``hurry``), as Celery's second
    Ctrl-C does; anything else, or a service still starting, exits at once.
    """

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.hurry: Callable[[], None] | None = None
        running = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            running.add_signal_handler(sig, self._heard, sig)

    def _heard(self, sig: signal.Signals) -> None:
        if not self.requested.is_set():
            self.requested.set()
            return
        if self.hurry is None:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)
            return
        err.print("handing the running steps back now")
        self.hurry()


async def until_signalled_or_failed(supervisor: Supervisor, requested: asyncio.Event) -> str | None:
    """Wait for a stop to be ``requested`` (None) or for ``supervisor`` to report a
    failure (why)."""
    failures: list[str] = []

    def failed(reason: str) -> None:
        failures.append(reason)
        requested.set()

    supervisor.on_failure(failed)
    await requested.wait()
    return failures[0] if failures else None


class Service(NamedTuple):
    """A long-running process as its command started it."""

    stop: Callable[[], Awaitable[None]]
    supervisor: Supervisor
    hurry: Callable[[], None] | None = None
    """What a second stop signal does during the stop (a worker: hand back its steps
    now rather than at the end of the grace period)."""


Serve = Callable[["cluster.DistributedTransport", RunStore], Awaitable[Service]]


async def _serve_until_signalled(settings: Settings, serve: Serve, role: Role) -> None:
    """Connect, start a long-running process with ``serve``, stop it on a stop signal;
    exit 1 if one of its essential loops ends (``contracts.supervision``)."""
    cluster.require(settings, "amqp_url", "redis_url")
    store = cluster.open_store(settings)
    try:
        async with cluster.transport(settings, role) as t:
            # Heard from here: a process still connecting has nothing to finish, and
            # ends at once as before; one starting its service may start steps.
            stops = StopRequests()
            service = await serve(t, store)
            failure = await until_signalled_or_failed(service.supervisor, stops.requested)
            stops.hurry = service.hurry
            await service.stop()
    finally:
        await store.close()
    if failure is not None:
        err.print(f"stopped: {failure}")
        raise typer.Exit(EXIT_FAILED)


def _check_metrics(port: int | None, address: str) -> None:
    if port is not None:
        try:
            check_metrics_address(address, os.environ.get(TOKEN_VARIABLE, ""))
        except InvalidInput as exc:
            raise fail_input(exc) from None


def register(app: typer.Typer) -> None:
    @app.command()
    def coordinator(
        amqp_url: AmqpOption = None,
        redis_url: RedisOption = None,
        shards: ShardsOption = None,
        metrics_port: MetricsPortOption = None,
        metrics_address: MetricsAddressOption = "127.0.0.1",
    ) -> None:
        """Run a coordinator (several may run: each shard has one active, the rest stand by)."""
        _check_metrics(metrics_port, metrics_address)
        settings = settings_from(amqp_url, redis_url, shards)

        async def serve(t: cluster.DistributedTransport, store: RunStore) -> Service:
            if metrics_port is not None:
                store = TimedRunLog(store)
            c = cluster.build_coordinator(settings, t, store)
            watching = None
            metrics = _metrics_port(metrics_port, metrics_address)
            if metrics is not None:
                measured = RunMetrics()
                c.observe(measured)
                watching = asyncio.get_running_loop().create_task(watch_queues(t, measured))
            await c.start()
            # Run changes a coordinator that stopped short left unannounced go out now.
            await c.announcer.announce_unannounced()
            err.print("coordinator running; Ctrl-C to stop")

            async def stop() -> None:
                if watching is not None:
                    watching.cancel()
                await c.stop()
                if metrics is not None:
                    metrics.close()

            return Service(stop, c.supervisor)

        try:
            loop.run(_serve_until_signalled(settings, serve, Role.COORDINATOR))
        except InvalidInput as exc:
            raise fail_input(exc) from None

    @app.command()
    def worker(
        pool: Annotated[str, typer.Option(help="Pool (queue) to take tasks from.")] = "default",
        concurrency: Annotated[int, typer.Option(min=1, help="Steps run at once.")] = 4,
        grace: Annotated[
            float | None,
            typer.Option(min=0, help="Seconds running steps get to finish on SIGTERM."),
        ] = None,
        python_path: Annotated[
            str | None,
            typer.Option(
                "--python-path",
                envvar=STEP_PATH_VARIABLE,
                help="Folders Python steps import from (separated by ':'), before the current"
                " directory.",
            ),
        ] = None,
        amqp_url: AmqpOption = None,
        redis_url: RedisOption = None,
        metrics_port: MetricsPortOption = None,
        metrics_address: MetricsAddressOption = "127.0.0.1",
    ) -> None:
        """Run a worker: take tasks of one pool, run them, report back. SIGTERM stops it cleanly."""
        _check_metrics(metrics_port, metrics_address)
        if not re.match(NAME_PATTERN, pool):
            said = f"{pool!r} is not a pool name (a letter or _, then letters, digits, _ and -)"
            raise fail_input(InvalidInput([Problem(said)], source="--pool"))
        settings = settings_from(amqp_url, redis_url)
        use_import_paths(step_import_paths(None, python_path or ""))

        async def serve(t: cluster.DistributedTransport, store: RunStore) -> Service:
            w = cluster.build_worker(settings, t, store, pool, concurrency)
            await w.start()
            watching = None
            metrics = _metrics_port(metrics_port, metrics_address)
            if metrics is not None:
                watching = asyncio.get_running_loop().create_task(_slots(w, pool, concurrency))
            err.print(
                f"worker {w.name} on pool {pool!r} (concurrency {concurrency}); Ctrl-C to stop"
            )

            async def stop() -> None:
                if watching is not None:
                    watching.cancel()
                wait = settings.worker_grace if grace is None else grace
                if w.busy:
                    err.print(
                        f"stopping: running steps get {wait:g}s to finish"
                        " (Ctrl-C again hands them back now)"
                    )
                await w.stop(grace=wait)
                if metrics is not None:
                    metrics.close()

            return Service(stop, w.supervisor, w.hurry)

        try:
            loop.run(_serve_until_signalled(settings, serve, Role.WORKER))
        except InvalidInput as exc:
            raise fail_input(exc) from None

    @app.command()
    def submit(
        file: WorkflowTarget,
        param: ParamOption = None,
        params_file: ParamsFileOption = None,
        wait: Annotated[
            bool, typer.Option("--wait/--no-wait", help="Show progress; exit like `conveyor run`.")
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json/--no-json", help="With --wait: print the result as JSON.")
        ] = False,
        idempotency_key: Annotated[
            str | None, typer.Option(help="Submitting twice with the same key starts one run.")
        ] = None,
        amqp_url: AmqpOption = None,
        redis_url: RedisOption = None,
        shards: ShardsOption = None,
    ) -> None:
        """Submit a workflow to the distributed engine; prints the run id."""
        settings = settings_from(amqp_url, redis_url, shards)
        try:
            cluster.require(settings, "amqp_url", "redis_url")
            workflow, params = load_for_run(file, param or [], params_file)
        except InvalidInput as exc:
            raise fail_input(exc) from None

        async def go() -> Any:
            async with cluster.open_client(settings, steer=True) as client:
                run_id = await client.submit(workflow, params, idempotency_key=idempotency_key)
                if not wait:
                    return run_id
                if as_json:
                    return await client.watch(run_id)
                err.print(f"run {run_id}")
                with LiveProgress(err) as progress:
                    return await client.watch(run_id, progress)

        result = loop.run(go())
        if not wait:
            sys.stdout.write(result + "\n")
            return
        if as_json:
            write_json(run_report(result))
        else:
            out.print(summary(result))
        raise typer.Exit(0 if result.status == RunStatus.SUCCEEDED else 1)

    @app.command("dead-letters")
    def dead_letters(
        show: Annotated[int, typer.Option(help="Print up to this many messages.")] = 0,
        amqp_url: AmqpOption = None,
    ) -> None:
        """Count (and show) the messages parked in the dead-letter queue."""
        settings = settings_from(amqp_url)

        async def go() -> tuple[int, list[Any]]:
            async with cluster.transport(settings, connect_within=settings.connect_within) as t:
                return await t.dead_letter_count(), await t.dead_letters(show) if show else []

        try:
            count, messages = loop.run(go())
        except InvalidInput as exc:
            raise fail_input(exc) from None
        say(f"{count} dead-lettered message(s)")
        for body, headers in messages:
            sys.stdout.write(
                json.dumps(
                    {"headers": dict(headers), "body": body.decode("utf-8", "replace")}, default=str
                )
                + "\n"
            )

    @app.command()
    def shards(
        count: Annotated[
            int | None,
            typer.Argument(min=1, max=1024, help="Spread new runs over this many shards."),
        ] = None,
        redis_url: RedisOption = None,
    ) -> None:
        """Show the coordinator shard map, or change it while everything runs.

        Runs already submitted finish on the shard they were pinned to; new runs are
        spread over COUNT shards; coordinators consume the new shard queues when they
        next read the map (CONVEYOR_SHARD_WATCH_INTERVAL). Nothing is drained.
        """
        settings = settings_from(None, redis_url)

        async def go() -> ShardMap:
            async with cluster.open_client(settings) as client:
                if count is None:
                    return await client.shard_map()
                return await client.reshard(count)

        try:
            cluster.require(settings, "redis_url")
            found = loop.run(go())
        except InvalidInput as exc:
            raise fail_input(exc) from None
        say(
            f"new runs go to {found.count} shard(s); coordinators consume {found.queues}"
            f" shard queue(s) (map version {found.epoch})"
        )


__all__ = ["register"]
