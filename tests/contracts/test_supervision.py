"""A loop that ends while its owner is not stopping is reported, once; one ended on
purpose (cancelled, or while stopping) is not."""

from __future__ import annotations

import asyncio

from contracts.supervision import Supervisor


async def ended(coroutine: object, name: str, supervisor: Supervisor) -> asyncio.Task[None]:
    loop: asyncio.Task[None] = asyncio.create_task(coroutine, name=name)  # type: ignore[arg-type]
    supervisor.watch(loop)
    # Watched first, the supervisor's callback runs before the one that ends gather.
    await asyncio.gather(loop, return_exceptions=True)
    return loop


async def fails() -> None:
    raise ConnectionError("the broker went away")


async def returns() -> None:
    return None


async def test_a_loop_that_raises_is_a_failure_named_after_it_and_its_error() -> None:
    supervisor = Supervisor("worker w1")
    heard: list[str] = []
    supervisor.on_failure(heard.append)
    await ended(fails(), "intake", supervisor)
    assert heard == ["worker w1: its loop intake ended: ConnectionError: the broker went away"]
    assert supervisor.failure == heard[0]


async def test_a_loop_that_just_returns_is_a_failure_too() -> None:
    supervisor = Supervisor("coordinator")
    await ended(returns(), "shard-0", supervisor)
    assert supervisor.failure == "coordinator: its loop shard-0 ended"


async def test_only_the_first_failure_is_reported_and_a_late_listener_hears_it() -> None:
    supervisor = Supervisor("worker w1")
    heard: list[str] = []
    supervisor.on_failure(heard.append)
    await ended(fails(), "intake", supervisor)
    await ended(returns(), "control", supervisor)
    late: list[str] = []
    supervisor.on_failure(late.append)
    assert len(heard) == 1 and "intake" in heard[0]
    assert late == heard


async def test_loops_ended_on_purpose_are_no_failure() -> None:
    supervisor = Supervisor("worker w1")
    forever = asyncio.create_task(asyncio.Event().wait(), name="heartbeat")
    supervisor.watch(forever)
    forever.cancel()
    await asyncio.gather(forever, return_exceptions=True)
    assert supervisor.failure is None
    supervisor.stopping = True
    await ended(fails(), "intake", supervisor)
    assert supervisor.failure is None
