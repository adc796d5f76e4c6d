"""A worker or coordinator whose consumer ends under it reports a failure (and the
process running it exits) instead of staying up taking nothing; one stopped does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts.errors import ConveyorError
from contracts.validation import parse_workflow
from contracts.vocabulary import RunStatus
from conveyor.cli.distributed import until_signalled_or_failed
from conveyor.embedded import EmbeddedEngine
from engine.coordinator import Coordinator
from engine.runlog.memory import MemoryRunLog
from workers.worker import Worker


@pytest.fixture
def transport(each_transport: Any) -> Any:
    return each_transport


async def failure_of(supervisor: Any) -> str:
    async with asyncio.timeout(10):
        reason = await until_signalled_or_failed(supervisor, asyncio.Event())
    assert reason is not None
    return reason


async def test_a_worker_whose_consumer_ends_fails_and_says_which_loop(transport: Any) -> None:
    worker = Worker(transport, MemoryRunLog(), pool="supervised", name="w1")
    await worker.start()
    try:
        consumer: Any = worker._intake._round.consumer  # type: ignore[union-attr]
        await consumer.close()  # as a consumer the broker dropped for good
        reason = await failure_of(worker.supervisor)
        assert reason.startswith("worker w1: its loop worker-w1 ended")
    finally:
        await worker.stop(grace=1)


async def test_a_worker_stopped_reports_no_failure(transport: Any) -> None:
    worker = Worker(transport, MemoryRunLog(), pool="supervised", name="w2")
    await worker.start()
    await worker.stop(grace=1)  # returns once its loops have ended
    assert worker.supervisor.failure is None


async def test_a_coordinator_whose_shard_consumer_ends_fails(transport: Any) -> None:
    coordinator = Coordinator(transport, MemoryRunLog())
    await coordinator.start()
    try:
        consumer: Any = coordinator._shard_queues._consumers[0]
        await consumer.close()
        reason = await failure_of(coordinator.supervisor)
        assert reason.startswith("coordinator: its loop shard-0 ended")
    finally:
        await coordinator.stop()
    stopped = Coordinator(transport, MemoryRunLog())
    await stopped.start()
    await stopped.stop()
    assert stopped.supervisor.failure is None


async def test_an_embedded_run_whose_worker_lost_its_intake_stops_instead_of_waiting() -> None:
    store = MemoryRunLog()
    async with EmbeddedEngine(store, workers=2) as engine:
        await engine.ensure_pools({"default"})
        worker: Any = engine._workers["default"]
        await worker._intake._round.consumer.close()
        workflow = parse_workflow("name: stuck\ntasks: [{name: a, script: echo a}]")
        with pytest.raises(ConveyorError, match=r"its loop worker-embedded.* ended"):
            async with asyncio.timeout(10):
                await engine.run(workflow, {})
        (run_id,) = [summary.run_id for summary in await engine.client.runs()]
        # Left as a run whose process died: `conveyor resume` finishes it.
        assert (await engine.client.state(run_id)).status == RunStatus.RUNNING


async def test_a_stop_signal_while_a_service_starts_stops_it_once_started() -> None:
    import os
    import signal

    from contracts.supervision import Supervisor
    from conveyor.cli.distributed import StopRequests

    stops = StopRequests()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # while it would be starting
        async with asyncio.timeout(10):
            await stops.requested.wait()
        async with asyncio.timeout(1):  # started now: the stop asked for earlier holds
            assert await until_signalled_or_failed(Supervisor("w1"), stops.requested) is None
        hurried: list[bool] = []
        stops.hurry = lambda: hurried.append(True)
        os.kill(os.getpid(), signal.SIGINT)
        async with asyncio.timeout(10):
            while not hurried:
                await asyncio.sleep(0.01)  # the loop reads the signal on a next turn
    finally:
        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            running.remove_signal_handler(sig)
