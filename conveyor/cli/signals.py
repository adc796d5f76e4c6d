"""``conveyor signal`` and ``conveyor approve``: release a run's wait steps.

On the distributed engine the signal goes to the run's coordinator through the client.
A local run is driven by one process (``conveyor run``, ``resume`` or ``server``), so
the signal is put in the home's trigger inbox, from which that process takes it.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer

from contracts.errors import InvalidInput, NotFound, Problem
from conveyor import loop
from conveyor.cli.common import (
    DEFAULT_HOME,
    AmqpOption,
    HomeOption,
    RedisOption,
    fail_input,
    say,
    settings_from,
)
from conveyor.local import queue_for_driver
from conveyor.settings import Settings
from conveyor.wiring import open_client
from engine.triggers.firing import SIGNAL_KIND

RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="Run id or a unique prefix.")]


def register(app: typer.Typer) -> None:
    app.command()(signal)
    app.command()(approve)


def signal(
    run: RunArgument,
    name: Annotated[str, typer.Argument(help="The signal a wait step waits for.")],
    data: Annotated[
        str | None, typer.Option("--data", help="JSON: the waiting steps' result.")
    ] = None,
    home: HomeOption = DEFAULT_HOME,
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
) -> None:
    """Send a signal to a run: its wait steps waiting for NAME succeed with --data."""
    try:
        value = json.loads(data) if data is not None else None
    except ValueError as exc:
        raise fail_input(InvalidInput([Problem(f"not JSON: {exc}")], source="--data")) from None
    _send(settings_from(amqp_url, redis_url, None, home), run, name, value)


def approve(
    run: RunArgument,
    task: Annotated[str, typer.Argument(help="The wait step to approve.")],
    by: Annotated[str | None, typer.Option("--by", help="Who approves (default: you).")] = None,
    home: HomeOption = DEFAULT_HOME,
    amqp_url: AmqpOption = None,
    redis_url: RedisOption = None,
) -> None:
    """Approve a wait step: its result is {"approved": true, "by": ...}."""
    settings = settings_from(amqp_url, redis_url, None, home)

    async def signal_of() -> str:
        async with open_client(settings) as client:
            state = await client.state(run)
        node = state.nodes.get(task)
        if node is None or node.spec.signal is None:
            waits = [n for n, node in state.nodes.items() if node.spec.signal]
            raise InvalidInput(
                [
                    Problem(
                        f"{task!r} is not a wait step of this run (its wait steps: "
                        f"{', '.join(waits) or 'none'})"
                    )
                ]
            )
        return node.spec.signal

    try:
        name = loop.run(signal_of())
    except (InvalidInput, NotFound) as exc:
        raise fail_input(exc) from None
    _send(settings, run, name, {"approved": True, "by": by or getpass.getuser()})


def _send(settings: Settings, run: str, name: str, data: Any) -> None:
    async def distributed() -> str:
        async with open_client(settings, steer=True) as client:
            return await client.signal(run, name, data, sender="cli")

    async def local() -> str:
        async with open_client(settings) as client:
            state = await client.state(run)
        waits = {n.spec.signal for n in state.nodes.values() if n.spec.signal}
        if state.finished:
            raise InvalidInput([Problem(f"run {state.run_id} already {state.status}")])
        if name not in waits:
            raise InvalidInput(
                [
                    Problem(
                        f"run {state.run_id} waits for no signal {name!r} (its wait steps"
                        f" wait for: {', '.join(sorted(waits)) or 'nothing'})"
                    )
                ]
            )
        await queue_for_driver(
            settings.home,
            state.workflow.name,
            SIGNAL_KIND,
            {"run": state.run_id, "signal": name, "data": data},
        )
        return state.run_id

    try:
        if settings.amqp_url and settings.redis_url:
            say(f"signal {name!r} sent to {loop.run(distributed())}")
        else:
            full = loop.run(local())
            say(f"signal {name!r} queued for {full} (the process running it takes it)")
    except (InvalidInput, NotFound) as exc:
        raise fail_input(exc) from None
