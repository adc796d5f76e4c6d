"""A loop that ends while its owner is not stopping is reported, once; one ended on
purpose (cancelled, or while stopping) is not."""

from __future__ import annotations

import asyncio
import contextlib

from contracts.supervision import Supervisor, stop_loops


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


async def loses_its_first_cancel(started: asyncio.Event) -> None:
    """A loop whose first cancel is swallowed, as Python 3.11's ``asyncio.wait_for``
    swallows one that lands in the turn its awaited result arrives."""
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await asyncio.Event().wait()


async def test_stopping_loops_ends_one_that_swallowed_its_cancel() -> None:
    started = asyncio.Event()
    stubborn = asyncio.create_task(loses_its_first_cancel(started), name="stubborn")
    plain = asyncio.create_task(asyncio.Event().wait(), name="plain")
    await started.wait()
    async with asyncio.timeout(5):
        await stop_loops([stubborn, plain])
    assert stubborn.cancelled() and plain.cancelled()


async def test_a_loop_spared_is_not_cancelled_again_and_is_waited_for() -> None:
    started, finish = asyncio.Event(), asyncio.Event()

    async def finishing_its_work() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await finish.wait()  # a second cancel here would cut this short

    spared = asyncio.create_task(finishing_its_work(), name="reporting")
    await started.wait()
    stopping = asyncio.create_task(stop_loops([spared], spare=lambda loop: loop is spared))
    # Past the time of a second cancel, it still runs: none came.
    assert not await _ended(spared, 1.2)
    finish.set()
    async with asyncio.timeout(5):
        assert await stopping == []
    assert not spared.cancelled()


async def test_a_loop_that_catches_every_cancel_is_left_behind_past_the_bound() -> None:
    started, released = asyncio.Event(), asyncio.Event()

    async def never_stops() -> None:
        started.set()
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await released.wait()

    stubborn = asyncio.create_task(never_stops(), name="stubborn")
    plain = asyncio.create_task(asyncio.Event().wait(), name="plain")
    await started.wait()  # inside its loop: a cancel before it starts would end it
    async with asyncio.timeout(5):
        left = await stop_loops([stubborn, plain], within=1.0)
    assert left == [stubborn] and not stubborn.done() and plain.cancelled()
    released.set()  # what ends it here
    await stubborn


async def _ended(loop: asyncio.Task[None], seconds: float) -> bool:
    done, _ = await asyncio.wait({loop}, timeout=seconds)
    return bool(done)


async def test_stopping_loops_that_ended_already_collects_how_they_ended() -> None:
    failed = asyncio.create_task(fails(), name="failed")
    await asyncio.wait({failed})
    await stop_loops([failed])  # no cancel to send, nothing raised
    assert isinstance(failed.exception(), ConnectionError)
