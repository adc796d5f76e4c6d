"""What the coordinator carries out once events are durable (``engine.effects``)."""

from __future__ import annotations

from contracts.codec import decode_tasks
from contracts.events import Event, TaskDispatched
from contracts.topology import shard_queue, task_queue
from contracts.vocabulary import AttemptRef
from engine.effects import Effects, stop_reason
from engine.leases import Leases
from engine.transport.memory import MemoryTransport
from tests.engine.sim import Sim

FLOW = """
name: two
tasks:
  - name: a
    python: "tests.steps.teststeps:echo"
  - name: b
    python: "tests.steps.teststeps:echo"
"""


class _NoTimers:
    async def start(self) -> None: ...

    async def schedule(self, due: float, event: Event) -> None:
        raise AssertionError(f"no timer expected here: {event}")

    async def close(self) -> None: ...


def _effects(sim: Sim, transport: MemoryTransport, leases: Leases) -> Effects:
    return Effects(
        transport, _NoTimers(), leases, pinned=lambda _run, _shard: 3, clock=lambda: sim.now
    )


def _last(sim: Sim, kind: str) -> Event:
    return next(event for event in reversed(sim.log) if event.kind == kind)


async def test_dispatches_go_to_the_pool_queue_with_the_shard_to_reply_to() -> None:
    sim = Sim(FLOW)
    transport = MemoryTransport()
    consumer = await transport.consume(task_queue("default"), prefetch=10)
    dispatched = [e for e in sim.last_decisions if isinstance(e, TaskDispatched)]
    assert {e.task for e in dispatched} == {"a", "b"}

    assert await _effects(sim, transport, Leases(30)).carry_out(dispatched, sim.state) == []

    sent = [m for delivery in consumer.ready(10) for m in decode_tasks(delivery.body)]
    assert {(m.task, m.reply_to) for m in sent} == {("a", shard_queue(3)), ("b", shard_queue(3))}
    await transport.close()


async def _start_both_and_end_a(sim: Sim, effects: Effects) -> None:
    for task in ("a", "b"):
        sim.started(task)
        await effects.carry_out([_last(sim, "task_started")], sim.state)
    sim.ok("a")
    await effects.carry_out([_last(sim, "task_succeeded")], sim.state)


async def test_an_attempt_with_no_outcome_is_the_one_lost_when_leases_expire() -> None:
    sim = Sim(FLOW)
    leases = Leases(30)
    await _start_both_and_end_a(sim, _effects(sim, MemoryTransport(), leases))
    assert leases.expire(sim.now + 29) == []
    assert leases.expire(sim.now + 31) == [AttemptRef(sim.run_id, "b", 0, 1)]


async def test_a_failure_releases_its_attempt_s_lease_as_a_success_does() -> None:
    sim = Sim(FLOW)
    leases = Leases(30)
    effects = _effects(sim, MemoryTransport(), leases)
    await _start_both_and_end_a(sim, effects)
    sim.fail("b", retryable=False)
    await effects.carry_out([_last(sim, "task_failed")], sim.state)
    assert leases.expire(sim.now + 3600) == []  # nothing left to be declared lost


def test_what_still_runs_of_a_finished_run_is_stopped_saying_why() -> None:
    # A step's cancelled attempt reports this reason: "cancelled: succeeded" read as
    # though the step had.
    succeeded = Sim(FLOW)
    for task in ("a", "b"):
        succeeded.started(task)
        succeeded.ok(task)
    assert stop_reason(succeeded.state) == "the run already succeeded"
    cancelled = Sim(FLOW)
    cancelled.cancel()
    assert stop_reason(cancelled.state) == "cancelled by user"
    late = Sim("name: late\ntimeout: 2s\n" + FLOW.split("\n", 2)[2])
    late.time_out()
    assert stop_reason(late.state) == "run timed out after 2s"
