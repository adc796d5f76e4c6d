"""Steering runs that exist: cancel, retry, resume, with the same words in both homes.

With ``CONVEYOR_AMQP_URL`` and ``CONVEYOR_REDIS_URL`` set the command goes to the
distributed engine through the client. Otherwise the run lives in the local home
(``conveyor.local``): with an embedded server serving the home, the command goes to it
through the home's inbox and resume and retry follow the run to its end; without one,
resume and retry run it here to its end, with progress. Cancel interrupts the process
running the run, or has the server cancel it, or records the cancellation if nothing
runs it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from contracts.errors import InvalidInput, NotFound, Problem
from contracts.events import Event
from contracts.ports import TriggerRecord
from contracts.vocabulary import RunStatus
from conveyor import loop
from conveyor.cli.common import (
    DEFAULT_HOME,
    EXIT_OK,
    EXIT_RUN_FAILED,
    AmqpOption,
    HomeOption,
    RedisOption,
    ShardsOption,
    err,
    fail_input,
    out,
    say,
    say_notified,
    say_notify_wait,
    settings_from,
)
from conveyor.local import drive, engine_for_run, interrupt_holder, steer_through_server
from conveyor.locks import RunLock, ServerLock
from conveyor.progress import LiveProgress, summary
from conveyor.settings import Settings
from conveyor.wiring import open_client
from engine.client import Client
from engine.coordinator import Observer
from engine.state.model import RunState

RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="Run id or a unique prefix.")]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Distributed: follow the run to its end. (A local run is always run to its end.)",
    ),
]


def _distributed(settings: Settings) -> bool:
    return bool(settings.amqp_url and settings.redis_url)


def _finish(
    state: RunState, stopped_with: int | None = None, notified: list[TriggerRecord] | None = None
) -> None:
    """``stopped_with``: the exit code of a signal that stopped the run here;
    ``notified``: its ``notify:`` deliveries made here."""
    out.print(summary(state))
    say_notified(notified or [])
    if stopped_with is not None:
        raise typer.Exit(stopped_with)
    raise typer.Exit(EXIT_OK if state.status == RunStatus.SUCCEEDED else EXIT_RUN_FAILED)


def _steer(settings: Settings, run: str, command: str, wait: bool) -> RunState | str:
    """Send ``command`` to a run on the distributed engine; its full id, or its end."""

    async def go() -> RunState | str:
        async with open_client(settings, steer=True) as client:
            if command == "cancel":
                return await client.cancel(run)
            past = -1
            if command == "retry":
                before = await client.retry(run)
                run_id, past = before.run_id, before.round
            else:
                run_id = await client.resume(run)
            if not wait:
                return run_id
            with LiveProgress(err) as progress:
                return await client.watch(run_id, progress, past_round=past)

    return loop.run(go())


def _drive_locally(
    settings: Settings, run: str, command: str
) -> tuple[RunState, int | None, list[TriggerRecord]]:
    """Resume or retry the local run to its end: its final state, the exit code of a
    signal that stopped it here, and its ``notify:`` deliveries made here."""

    async def go() -> tuple[RunState, int | None, list[TriggerRecord]]:
        async with open_client(settings) as reader:
            state = await reader.state(run)
            # Before anything is sent: a resume sent to a run another process drives
            # would have two engines run its steps.
            RunLock(settings.home, state.run_id).refuse_if_held()
            server = ServerLock(settings.home).holder()
            if server is not None:
                past = state.round if command == "retry" else -1
                before = state.events_folded  # progress shows only what the command brings
                await steer_through_server(
                    settings.home, state.workflow.name, state.run_id, command
                )
                err.print(f"{command}: the server of this home (process {server}) runs it")
                with LiveProgress(err) as progress:
                    shown = _after(before, progress)
                    return await reader.watch(state.run_id, shown, past_round=past), None, []
        run_id = state.run_id
        async with engine_for_run(settings, run_id, state.workflow, waiting=say_notify_wait) as (
            engine,
            notices,
        ):
            client: Client = engine.client

            async def start() -> int:
                if command == "retry":
                    return (await client.retry(run_id)).round
                await client.resume(run_id, steps_lost=True)
                return -1

            with LiveProgress(err) as progress:
                ended, stopped_with = await drive(
                    engine, settings.home, run_id, start, observer=progress, notices=notices
                )
            return ended, stopped_with, notices.outcomes if notices else []

    return loop.run(go())


def _after(count: int, observer: Observer) -> Observer:
    """``observer`` for the events after the first ``count`` (what the command brought)."""
    seen = 0

    def observe(event: Event, state: RunState) -> None:
        nonlocal seen
        seen += 1
        if seen > count:
            observer(event, state)

    return observe


def register(app: typer.Typer) -> None:
    @app.command()
    def cancel(
        run: RunArgument,
        home: HomeOption = DEFAULT_HOME,
        amqp_url: AmqpOption = None,
        redis_url: RedisOption = None,
        shards: ShardsOption = None,
    ) -> None:
        """Cancel a running run: its running steps are killed, it ends as cancelled."""
        settings = settings_from(amqp_url, redis_url, shards, home)
        try:
            if _distributed(settings):
                full = _steer(settings, run, "cancel", wait=False)
                say(f"cancel requested for {full}")
                return
            said, notified = _cancel_locally(settings, run)
        except (InvalidInput, NotFound) as exc:
            raise fail_input(exc) from None
        say(said)
        say_notified(notified)

    @app.command()
    def retry(
        run: RunArgument,
        wait: WaitOption = False,
        home: HomeOption = DEFAULT_HOME,
        amqp_url: AmqpOption = None,
        redis_url: RedisOption = None,
        shards: ShardsOption = None,
    ) -> None:
        """Re-run the failed tasks of a finished run and their dependents; keep the successes."""
        _control(run, "retry", wait, settings_from(amqp_url, redis_url, shards, home))

    @app.command()
    def resume(
        run: RunArgument,
        wait: WaitOption = False,
        home: HomeOption = DEFAULT_HOME,
        amqp_url: AmqpOption = None,
        redis_url: RedisOption = None,
        shards: ShardsOption = None,
    ) -> None:
        """Finish a run whose process died (SIGKILL, power loss): what was not done runs."""
        _control(run, "resume", wait, settings_from(amqp_url, redis_url, shards, home))


def _control(run: str, command: str, wait: bool, settings: Settings) -> None:
    result: Any
    try:
        if _distributed(settings):
            result = _steer(settings, run, command, wait)
            if isinstance(result, str):
                say(f"{command} requested for {result}")
                return
            _finish(result)
        result, stopped_with, notified = _drive_locally(settings, run, command)
    except (InvalidInput, NotFound) as exc:
        raise fail_input(exc) from None
    _finish(result, stopped_with, notified)


def _cancel_locally(settings: Settings, run: str) -> tuple[str, list[TriggerRecord]]:
    """Cancel a local run through whatever drives it: what was done, in words, and the
    ``notify:`` deliveries made here (where it is cancelled here)."""

    async def go() -> tuple[str, list[TriggerRecord]]:
        async with open_client(settings) as reader:
            state = await reader.state(run)
            if state.finished:
                raise InvalidInput([Problem(f"run {state.run_id} already {state.status}")])
            full = state.run_id
            pid = interrupt_holder(settings.home, full)
            if pid is not None:
                return f"cancel requested for {full} (interrupted process {pid}, which runs it)", []
            server = ServerLock(settings.home).holder()
            if server is not None:
                await steer_through_server(settings.home, state.workflow.name, full, "cancel")
                return f"cancelled {full} (by the server of this home, process {server})", []
        # Nobody runs it: record the cancellation here, running nothing.
        async with engine_for_run(
            settings, full, state.workflow, run_steps=False, waiting=say_notify_wait
        ) as (engine, notices):
            await engine.client.cancel(full)
            await engine.wait(full)
            if notices is not None:
                await notices.delivered()
        notified = notices.outcomes if notices else []
        return f"cancelled {full} (no process was running it)", notified

    return loop.run(go())
