"""Failure semantics of the distributed engine, on real RabbitMQ, Redis and processes.

Each test kills, stops or restarts something at a chosen moment and checks that the
run still ends correctly, with every task succeeding at most once in its state. The
time from the fault to recovery is printed (run pytest with -s to see it).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from contracts.events import TaskFailed, TaskStarted, TaskSucceeded
from engine.state.subflows import child_run_id
from tests.integration.cluster import (
    HEARTBEAT_TIMEOUT,
    Cluster,
    assert_one_success_in_state,
    started,
    succeeded_count,
)
from tests.services import LocalRabbit, Services, server_folder

pytestmark = pytest.mark.timeout(240)


def report(what: str, seconds: float) -> None:
    print(f"\n[recovery] {what}: {seconds:.2f}s")


CHAIN = """
name: chain
tasks:
  - name: first
    script: echo 1
  - name: slow
    depends: [first]
    script: sleep {sleep}; echo slow-done
  - name: fan
    depends: [slow]
    items: [1, 2, 3, 4, 5, 6]
    env: {{ITEM: "{{{{ item }}}}"}}
    script: echo $(( ITEM * 2 ))
  - name: last
    depends: [fan]
    command: [echo, "{{{{ tasks.fan.outputs.result }}}}"]
"""


def running_items(events: list[Any], task: str) -> set[tuple[int, int]]:
    """The (item, attempt) pairs of ``task`` started and not ended, in the log's order."""
    running: set[tuple[int, int]] = set()
    for event in events:
        if getattr(event, "task", None) != task:
            continue
        if isinstance(event, TaskStarted):
            running.add((event.index, event.attempt))
        elif isinstance(event, (TaskSucceeded, TaskFailed)):
            running.discard((event.index, event.attempt))
    return running


async def test_worker_killed_in_a_batched_fan_out_loses_nothing(cluster: Cluster) -> None:
    cluster.coordinator()
    victim = cluster.worker(concurrency=4)
    run_id = await cluster.submit(
        """
        name: batched
        tasks:
          - name: each
            items: "range(600)"
            python: tests.steps.teststeps:slow_identity
            args: {value: "{{ item }}", seconds: 0.05}
          - name: total
            depends: [each]
            python: tests.steps.teststeps:total
            args: {values: "{{ tasks.each.outputs.result }}"}
        """
    )
    # Killed once the log shows it running items (started, not ended): a kill between
    # two of its batches, or before it told of its starts, would leave nothing in the
    # log to see run again.
    await cluster.wait_until(
        run_id,
        lambda ev: succeeded_count(ev, "each") >= 60 and bool(running_items(ev, "each")),
        60,
        "60 items to finish while others run",
    )
    cluster.kill(victim)  # with batches it took but had not finished
    killed_at = time.monotonic()
    cluster.worker(concurrency=4)
    state = await cluster.finished(run_id, timeout=120)
    report("worker SIGKILL in a 600-item fan-out -> run completed", time.monotonic() - killed_at)
    assert state.status == "succeeded", state.reason
    assert state.nodes["total"].outputs()["result"] == sum(range(600))
    events = await cluster.events(run_id)
    assert_one_success_in_state(state, events, "each")
    lost = [e for e in events if isinstance(e, TaskFailed)]
    assert all(e.reason == "lost" for e in lost)
    # What the victim had started ran again: as a new attempt once its lease ran out, or
    # as the same attempt when its message came back unacked (a message is acked once
    # the broker has confirmed the start of its tasks) and the other worker took it.
    starters: dict[int, set[str]] = {}
    for event in events:
        if isinstance(event, TaskStarted) and event.task == "each":
            starters.setdefault(event.index, set()).add(event.worker)
    started_twice = [index for index, workers in starters.items() if len(workers) > 1]
    assert lost or started_twice, "nothing the victim started ran again"


async def test_worker_killed_mid_step_the_task_runs_again(cluster: Cluster) -> None:
    cluster.coordinator()
    victim = cluster.worker()
    run_id = await cluster.submit(CHAIN.format(sleep=3))
    await cluster.wait_until(run_id, started("slow"), 30, "the slow step to start")
    cluster.kill(victim)
    killed_at = time.monotonic()
    cluster.worker()
    events = await cluster.wait_until(
        run_id, started("slow", attempt=2), 30, "the step to run again"
    )
    report("worker SIGKILL -> task running again", time.monotonic() - killed_at)
    state = await cluster.finished(run_id)
    assert state.status == "succeeded"
    lost = [e for e in events if isinstance(e, TaskFailed) and e.task == "slow"]
    assert [e.reason for e in lost] == ["lost"]
    final = await cluster.events(run_id)
    assert succeeded_count(final, "slow") == 1
    assert state.nodes["fan"].outputs()["result"] == [2, 4, 6, 8, 10, 12]


async def test_coordinator_killed_mid_run_a_standby_resumes(cluster: Cluster) -> None:
    active = cluster.coordinator()
    await cluster.wait_for_shard_consumers(1)  # it holds every shard; the next one waits
    cluster.coordinator()
    cluster.worker(concurrency=3)
    run_id = await cluster.submit(CHAIN.format(sleep=1))
    await cluster.wait_until(run_id, started("slow"), 30, "the slow step to start")
    cluster.kill(active)
    killed_at = time.monotonic()
    state = await cluster.finished(run_id)  # strict replay: the log agrees with the engine
    report("coordinator SIGKILL -> run completed by the other", time.monotonic() - killed_at)
    assert state.status == "succeeded"
    events = await cluster.events(run_id)
    for task in ("first", "slow", "fan", "last"):
        assert_one_success_in_state(state, events, task)
    dispatched = [(e.task, e.index, e.attempt) for e in events if e.kind == "task_dispatched"]
    assert len(dispatched) == len(set(dispatched))


LONG_PARTS = f"""
name: long-parts
tasks:
  - name: sub
    workflow:
      spec:
        name: slow-child
        tasks:
          - name: first
            script: sleep {2 * HEARTBEAT_TIMEOUT}; echo first
          - name: second
            depends: [first]
            script: sleep {2 * HEARTBEAT_TIMEOUT}; echo second
  - name: gate
    wait: {{}}
  - name: after
    depends: [sub, gate]
    script: echo after
"""
"""A workflow step and a wait step, each in flight for longer than the lease, before
and after a takeover."""


async def test_a_child_run_and_a_wait_outlast_the_lease_across_a_takeover(
    cluster: Cluster,
) -> None:
    # No worker beats for a child run or a wait: neither may be declared lost, by the
    # coordinator that started it or by the standby that takes the run up.
    active = cluster.coordinator()
    await cluster.wait_for_shard_consumers(1)
    cluster.coordinator()
    cluster.worker(concurrency=2)
    run_id = await cluster.submit(LONG_PARTS)
    child = child_run_id(run_id, "sub", 0, 1)
    # The child's first step alone outlasts the lease the active coordinator would grant.
    await cluster.wait_until(child, lambda ev: succeeded_count(ev, "first") == 1, 60, "first")
    cluster.kill(active)
    await cluster.wait_until(child, lambda ev: succeeded_count(ev, "second") == 1, 60, "second")
    async with cluster.client() as client:
        await client.signal(run_id, "gate", {"ok": True})
    state = await cluster.finished(run_id)
    assert state.status == "succeeded", state.reason
    assert [state.nodes[t].instances[0].attempt for t in ("sub", "gate")] == [1, 1]
    events = await cluster.events(run_id)
    assert not [e for e in events if isinstance(e, TaskFailed)]
    logs = "".join(path.read_text() for path in cluster.workdir.glob("coordinator-*.log"))
    assert "attempt lost" not in logs


async def test_coordinator_killed_in_a_fan_out_of_slow_steps_runs_none_twice(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The standby sends again only the task messages that may never have gone out: the
    tasks dispatched and still queued when the first coordinator died run once."""
    ran = tmp_path / "ran"
    active = cluster.coordinator()
    await cluster.wait_for_shard_consumers(1)
    cluster.coordinator()
    cluster.worker(concurrency=8)
    cluster.worker(concurrency=8)
    run_id = await cluster.submit(
        f"""
        name: slow-fan
        tasks:
          - name: each
            items: "range(1000)"
            python: tests.steps.teststeps:noted
            args: {{value: "{{{{ item }}}}", path: "{ran}", seconds: 0.05}}
        """
    )
    await cluster.wait_until(
        run_id, lambda ev: succeeded_count(ev, "each") >= 100, 60, "100 items to finish"
    )
    cluster.kill(active)  # with hundreds of items dispatched and queued
    state = await cluster.finished(run_id, timeout=120)
    assert state.status == "succeeded", state.reason
    assert_one_success_in_state(state, await cluster.events(run_id), "each")
    runs = Counter(int(value) for value in ran.read_text().split())
    assert set(runs) == set(range(1000))
    assert [item for item, count in runs.items() if count > 1] == []  # each ran once


async def test_hung_worker_is_reclaimed_and_its_late_result_is_ignored(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The late result arrives while the run is still going (``after`` waits for the
    test's word): once a run completes, its workers are told to cancel what they still
    run, and a worker woken after that may hear the cancel before its step's end."""
    gate = tmp_path / "go"
    cluster.coordinator()
    hung = cluster.worker(concurrency=1)
    run_id = await cluster.submit(
        f"""
        name: hang
        tasks:
          - name: step
            script: sleep 1; echo "attempt $CONVEYOR_ATTEMPT"
          - name: after
            depends: [step]
            env: {{SEEN: "{{{{ tasks.step.outputs.result }}}}"}}
            script: until [ -e {gate} ]; do sleep 0.05; done; echo "saw $SEEN"
        """
    )
    await cluster.wait_until(run_id, started("step"), 30, "the step to start")
    cluster.signal(hung, signal.SIGSTOP)  # alive, but silent: no heartbeats
    stopped_at = time.monotonic()
    cluster.worker(concurrency=1)
    await cluster.wait_until(run_id, started("after"), 60, "the step to run again and succeed")
    report(
        f"hung worker (heartbeat timeout {HEARTBEAT_TIMEOUT}s) -> step run elsewhere",
        time.monotonic() - stopped_at,
    )
    cluster.signal(hung, signal.SIGCONT)  # it wakes up and reports attempt 1 late
    events = await cluster.wait_until(
        run_id,
        lambda ev: any(isinstance(e, TaskSucceeded) and e.attempt == 1 for e in ev),
        30,
        "the late result of attempt 1",
    )
    late = [e for e in events if isinstance(e, TaskSucceeded) and e.attempt == 1]
    assert late and late[0].result == "attempt 1"  # kept in the log for the record ...
    gate.touch()
    state = await cluster.finished(run_id)
    assert state.status == "succeeded", state.reason
    assert state.nodes["step"].outputs()["result"] == "attempt 2"  # ... and ignored
    assert state.nodes["after"].outputs()["result"] == "saw attempt 2"


async def test_cancel_kills_running_steps_within_two_seconds(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.coordinator()
    cluster.worker()
    pidfile = tmp_path / "step.pid"
    run_id = await cluster.submit(
        f"""
        name: long
        tasks:
          - name: step
            script: echo $$ > {pidfile}; exec sleep 60
        """
    )
    await cluster.wait_until(run_id, started("step"), 30, "the step to start")
    asked = time.monotonic()
    async with cluster.client() as client:
        await client.cancel(run_id)
    state = await cluster.finished(run_id, timeout=2)
    pid = int(pidfile.read_text())
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() - asked < 2, "step process still alive 2s after cancel"
        await asyncio.sleep(0.05)
    report("cancel -> run cancelled and step killed", time.monotonic() - asked)
    assert state.status == "cancelled"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
async def test_sigterm_or_sighup_lets_running_steps_finish_then_exits_0(
    cluster: Cluster, stop: signal.Signals
) -> None:
    """As systemd and Kubernetes stop it, or a closed terminal it was started from."""
    cluster.coordinator()
    worker = cluster.worker(concurrency=1, grace=20)
    run_id = await cluster.submit(
        """
        name: graceful
        tasks:
          - name: step
            script: sleep 2; echo finished
          - name: after
            depends: [step]
            script: echo after
        """
    )
    await cluster.wait_until(run_id, started("step"), 30, "the step to start")
    # To the worker alone, as Kubernetes and systemd do: a signal to its whole process
    # group could also reach a step process in the instant between fork and setsid.
    worker.send_signal(stop)
    code = await asyncio.to_thread(worker.wait, 30)
    assert code == 0
    events = await cluster.events(run_id)
    assert succeeded_count(events, "step") == 1  # it finished before the worker exited
    assert not started("after")(events)  # and took nothing new
    cluster.worker()
    state = await cluster.finished(run_id)
    assert state.status == "succeeded"


async def test_sigterm_past_the_grace_period_hands_the_step_back(cluster: Cluster) -> None:
    cluster.coordinator()
    worker = cluster.worker(concurrency=1, grace=0.5)
    run_id = await cluster.submit(
        """
        name: handback
        tasks:
          - name: step
            script: sleep 3; echo "done by attempt $CONVEYOR_ATTEMPT"
        """
    )
    await cluster.wait_until(run_id, started("step"), 30, "the step to start")
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    cluster.worker()
    state = await cluster.finished(run_id)
    assert state.status == "succeeded"
    assert state.nodes["step"].outputs()["result"] == "done by attempt 2"
    events = await cluster.events(run_id)
    assert [e.reason for e in events if isinstance(e, TaskFailed)] == ["lost"]


async def test_a_second_sigterm_hands_the_step_back_without_waiting_for_the_grace(
    cluster: Cluster,
) -> None:
    cluster.coordinator()
    worker = cluster.worker(concurrency=1, grace=600)
    log = cluster.workdir / f"worker-{len(cluster.procs) - 1}.log"  # what it prints
    run_id = await cluster.submit(
        """
        name: hurried
        tasks:
          - name: step
            script: sleep 600; echo "done by attempt $CONVEYOR_ATTEMPT"
        """
    )
    await cluster.wait_until(run_id, started("step"), 30, "the step to start")
    worker.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        while b"stopping: running steps get 600s" not in log.read_bytes():
            await asyncio.sleep(0.05)  # polled: the worker's own words say it is stopping
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    events = await cluster.events(run_id)
    assert [e.reason for e in events if isinstance(e, TaskFailed)] == ["lost"]
    assert b"handing the running steps back now" in log.read_bytes()


async def test_redis_outage_pauses_the_engine_and_loses_nothing(
    cluster: Cluster, services: Services
) -> None:
    if services.redis is None:
        pytest.skip("needs a Redis this test can stop (the local one)")
    cluster.coordinator()
    cluster.worker(concurrency=2)
    run_id = await cluster.submit(CHAIN.format(sleep=1))
    await cluster.wait_until(run_id, started("slow"), 30, "the slow step to start")
    services.redis.stop()
    down_at = time.monotonic()
    await asyncio.sleep(3)  # the outage itself: a fault we inject, not a synchronisation
    services.redis.start()
    state = await cluster.finished(run_id)
    report("Redis down 3s -> run completed after it returned", time.monotonic() - down_at)
    assert state.status == "succeeded"
    events = await cluster.events(run_id)
    for task in ("first", "slow", "fan", "last"):
        assert_one_success_in_state(state, events, task)


async def test_rabbitmq_restart_mid_run(cluster: Cluster, services: Services) -> None:
    if services.rabbit is None:
        pytest.skip("needs a RabbitMQ this test can restart (the local one)")
    cluster.coordinator()
    cluster.worker(concurrency=2)
    run_id = await cluster.submit(CHAIN.format(sleep=2))
    await cluster.wait_until(run_id, started("slow"), 30, "the slow step to start")
    services.rabbit.stop()
    down_at = time.monotonic()
    services.rabbit.start()
    state = await cluster.finished(run_id, timeout=120)
    report("RabbitMQ restart -> run completed", time.monotonic() - down_at)
    assert state.status == "succeeded"
    events = await cluster.events(run_id)
    for task in ("first", "slow", "fan", "last"):
        assert_one_success_in_state(state, events, task)


async def test_step_longer_than_the_broker_consumer_timeout(redis_url: str, tmp_path: Path) -> None:
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("needs RabbitMQ's server, to start a node that checks timeouts often")
    # The session's node checks its 1 s consumer_timeout once a minute; this one twice a
    # second, so a step of 4 s outlives several checks. A worker holding the step's message
    # unacked would get its channel closed (the attempt would go on, leased, and the
    # message's redelivery be recognised: the broker's log is what tells).
    base = server_folder("conveyor-rabbit-")
    rabbit = LocalRabbit(base, consumer_timeout_ms=1_000, check_every_ms=500)
    await asyncio.to_thread(rabbit.start)
    cluster = Cluster(rabbit.url, redis_url, tmp_path)
    try:
        await cluster.reset()
        cluster.coordinator()
        cluster.worker(concurrency=1)
        run_id = await cluster.submit(
            """
            name: long
            tasks:
              - name: step
                script: sleep 4; echo done
            """
        )
        state = await cluster.finished(run_id, timeout=60)
        assert state.status == "succeeded"
        assert state.nodes["step"].instances[0].attempt == 1
        assert "timed out waiting for delivery acknowledgement" not in rabbit.log()
    finally:
        await cluster.close()
        await asyncio.to_thread(rabbit.stop)
        shutil.rmtree(base, ignore_errors=True)


async def test_every_task_a_frozen_worker_held_runs_elsewhere_within_the_lease(
    cluster: Cluster,
) -> None:
    """SIGSTOP: the worker neither dies nor beats. Its started attempts come back when
    their lease ends; it is sent no message it has no free slot for (and one it froze
    before starting would come back when the broker misses its AMQP heartbeats, which are
    kept within the lease). After SIGCONT its late results change nothing."""
    lease = 4.0
    cluster.env.update(
        CONVEYOR_HEARTBEAT_TIMEOUT=str(lease),
        CONVEYOR_AMQP_HEARTBEAT="30",  # asked for; kept under a third of the lease
        CONVEYOR_DISPATCH_BATCH="1",  # one task per message, as many as it has slots
    )
    cluster.coordinator()
    frozen = cluster.worker(concurrency=2)
    run_id = await cluster.submit(
        """
        name: frozen
        tasks:
          - name: each
            items: "{{ range(10) }}"
            script: sleep 3; echo "attempt $CONVEYOR_ATTEMPT"
        """
    )
    events = await cluster.wait_until(run_id, started("each", 1), 30, "two items to start")
    frozen_name = next(e.worker for e in events if e.kind == "task_started")
    cluster.worker(concurrency=10)  # ready before the freeze: its start is not counted

    def helper_running(ev: list[Any]) -> bool:
        return any(e.kind == "task_started" and e.worker != frozen_name for e in ev)

    await cluster.wait_until(run_id, helper_running, 30, "the other worker to take items")
    cluster.signal(frozen, signal.SIGSTOP)
    stopped_at = time.monotonic()
    events = await cluster.events(run_id)
    done = {e.index for e in events if e.kind == "task_succeeded"}
    held = {e.index for e in events if e.kind == "task_started" and e.worker == frozen_name}
    held -= done
    assert held  # it holds running attempts

    def all_running_elsewhere(ev: list[Any]) -> bool:
        elsewhere = {e.index for e in ev if e.kind == "task_started" and e.worker != frozen_name}
        return elsewhere | done >= set(range(10))

    await cluster.wait_until(run_id, all_running_elsewhere, 60, "every item to run elsewhere")
    moved_in = time.monotonic() - stopped_at
    report(f"frozen worker (lease {lease:g}s) -> every item it held running elsewhere", moved_in)
    assert moved_in < lease + 3.0  # the lease, the period of its check, a loaded machine
    state = await cluster.finished(run_id)
    assert state.status == "succeeded"
    cluster.signal(frozen, signal.SIGCONT)  # it wakes and reports what it finished late
    events = await cluster.wait_until(
        run_id,
        lambda ev: any(
            isinstance(e, TaskSucceeded) and e.attempt == 1 and e.index in held for e in ev
        ),
        30,
        "a late result from the frozen worker",
    )
    from engine.state import replay

    final = replay(events)
    assert final.status == "succeeded"
    results = final.nodes["each"].outputs()["result"]
    assert all(results[i] == "attempt 2" for i in held)  # the late attempt 1 is ignored
    assert_one_success_in_state(final, events, "each")
