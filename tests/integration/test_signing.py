"""On a broker anyone can publish to, only signed messages move runs (real RabbitMQ,
Redis and processes)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from contracts.codec import encode, encode_tasks
from contracts.events import RunSubmitted, TaskSucceeded
from contracts.messages import StepSpec, TaskReady
from contracts.signing import KeyRing, Role, SignatureError
from contracts.topology import (
    DEAD_LETTER_QUEUE,
    STATE_CHANGES_EXCHANGE,
    shard_of,
    shard_queue,
    task_queue,
)
from tests.amqp import amqp_channel
from tests.integration.cluster import SHARDS, Cluster
from tests.integration.test_cli_distributed import cli
from tests.test_docs import run_cli

pytestmark = pytest.mark.timeout(180)

KEYS = (
    "coordinator:k1:coordinator-secret-0001,worker:w1:worker-secret-00000001,"
    "client:c1:client-secret-00000001"
)


@pytest.fixture
async def cluster(amqp_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(amqp_url, redis_url, tmp_path)
    await c.reset()
    c.env["CONVEYOR_SIGNING_KEYS"] = KEYS
    c.coordinator()
    c.worker(concurrency=2)
    yield c
    await c.close()


async def publish_raw(amqp_url: str, queue: str, body: bytes) -> None:
    """What anyone with access to the broker can do."""
    async with amqp_channel(amqp_url) as channel:
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)


async def dead_lettered(amqp_url: str, count: int, timeout: float = 30) -> list[bytes]:
    deadline = time.monotonic() + timeout
    async with amqp_channel(amqp_url) as channel:
        while True:
            queue = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True, passive=True)
            if (queue.declaration_result.message_count or 0) >= count:
                break
            assert time.monotonic() < deadline, "forged messages were not dead-lettered"
            await asyncio.sleep(0.1)
        bodies = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body)
        return bodies


async def test_signed_runs_work_and_forgeries_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: signed\ntasks:\n  - name: a\n    command: [echo, signed]\n")
    done = cli(cluster, "submit", str(wf), "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = json.loads(done.stdout)["run_id"]

    # 1. An unsigned task message would run a command on a worker.
    forged_task = TaskReady(
        run_id=run_id,
        task="a",
        attempt=9,
        step=StepSpec(kind="command", argv=["touch", str(marker)]),
        reply_to=shard_queue(0),
    )
    await publish_raw(cluster.amqp_url, task_queue("default"), encode_tasks([forged_task]))
    # 2. An unsigned result would make a run succeed with a fake value.
    forged_result = TaskSucceeded(run_id="r" * 32, at=1.0, task="a", attempt=1, result="fake")
    shard = shard_queue(shard_of(forged_result.run_id, SHARDS))
    await publish_raw(cluster.amqp_url, shard, encode(forged_result))
    # 3. A worker's key does not let it submit runs.
    worker_only = KeyRing.parse(KEYS)
    submitted = RunSubmitted(
        run_id="s" * 32,
        at=1.0,
        workflow={"name": "x", "tasks": [{"name": "t", "script": "true"}]},
        params={},
    )
    await publish_raw(
        cluster.amqp_url,
        shard_queue(shard_of(submitted.run_id, SHARDS)),
        worker_only.sign(Role.WORKER, encode(submitted)),
    )

    dead = await dead_lettered(cluster.amqp_url, 3)
    assert len(dead) == 3
    assert not marker.exists()
    for run in ("r" * 32, "s" * 32):
        assert await cluster.events(run) == []
    # The genuine run is intact and the system still works.
    again = cli(cluster, "submit", str(wf), "--wait")
    assert again.returncode == 0, again.stdout + again.stderr


async def test_a_workflow_step_runs_its_child_run_on_a_signed_cluster(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The coordinator submits the child run, and tells the parent its start and end:
    messages of its own, signed with its key and taken by the shards."""
    shown = run_parent_of_child_runs(cluster, tmp_path, [1, 2, 3])
    assert shown["outputs"] == {"all": [{"twice": 2}, {"twice": 4}, {"twice": 6}]}


def run_parent_of_child_runs(cluster: Cluster, folder: Path, items: list[int]) -> Any:
    """A parent run with a workflow step over ``items``, a child run each doubling its
    item, submitted and waited for: shown as ``submit --json`` shows it."""
    (folder / "child.yaml").write_text(
        "name: child\nparams: {n: {type: int}}\ntasks:\n  - name: a\n"
        '    command: [echo, "{{ params.n * 2 }}"]\n'
        'outputs:\n  twice: "{{ tasks.a.outputs.result }}"\n'
    )
    (folder / "parent.yaml").write_text(
        f"name: parent\ntasks:\n  - name: each\n    items: {items}\n"
        '    workflow: {file: child.yaml, params: {n: "{{ item }}"}}\n'
        'outputs:\n  all: "{{ tasks.each.outputs.result }}"\n'
    )
    done = cli(cluster, "submit", str(folder / "parent.yaml"), "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert shown["state"] == "succeeded"
    return shown


async def test_a_worker_s_key_does_not_release_a_wait(cluster: Cluster, tmp_path: Path) -> None:
    """A worker sends successes, but only of the steps a worker runs: signed with a
    worker's key, the success of an approval gate is refused, and the gate still waits
    for its signal."""
    wf = tmp_path / "gated.yaml"
    wf.write_text(
        "name: gated\ntasks:\n  - name: gate\n    wait: {}\n"
        "  - name: after\n    depends: [gate]\n    command: [echo, shipped]\n"
    )
    submitted = cli(cluster, "submit", str(wf))
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = submitted.stdout.strip()
    await cluster.wait_until(
        run_id,
        lambda events: any(e.kind == "task_dispatched" and e.task == "gate" for e in events),
        30,
        "the gate to wait",
    )
    forged = TaskSucceeded(run_id=run_id, at=1.0, task="gate", attempt=1, result="approved")
    signed = KeyRing.parse(KEYS).sign(Role.WORKER, encode(forged))
    await publish_raw(cluster.amqp_url, shard_queue(shard_of(run_id, SHARDS)), signed)

    assert await dead_lettered(cluster.amqp_url, 1) == [signed]
    assert not any(e.kind == "task_succeeded" for e in await cluster.events(run_id))
    released = cli(cluster, "signal", run_id, "gate", "--data", '"by ann"')
    assert released.returncode == 0, released.stdout + released.stderr
    final = await cluster.finished(run_id)
    assert final.status == "succeeded"
    assert final.nodes["gate"].outputs()["result"] == "by ann"


@pytest.fixture
async def split_cluster(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, dict[Role, str]]]:
    """Each process holds only its own role's set from `conveyor keys new`: workers and
    clients have the coordinator's public key, not a key that signs as it."""
    from conveyor.keys import new_key_sets

    sets = new_key_sets()
    c = Cluster(amqp_url, redis_url, tmp_path)
    await c.reset()
    c.env = {**c.env, "CONVEYOR_SIGNING_KEYS": sets[Role.COORDINATOR]}
    c.coordinator()
    c.env = {**c.env, "CONVEYOR_SIGNING_KEYS": sets[Role.WORKER]}
    c.worker(concurrency=2)
    c.env = {**c.env, "CONVEYOR_SIGNING_KEYS": sets[Role.CLIENT]}
    yield c, sets
    await c.close()


async def test_a_worker_s_host_holds_no_key_that_passes_for_the_coordinator(
    split_cluster: tuple[Cluster, dict[Role, str]], tmp_path: Path
) -> None:
    cluster, sets = split_cluster
    async with amqp_channel(cluster.amqp_url) as channel:
        # Another service's queue on the state changes (the exchange exists once the
        # coordinator took its shards).
        await cluster.wait_for_shard_consumers(1)
        theirs = await channel.declare_queue("their-changes", exclusive=False, auto_delete=False)
        await theirs.purge()
        await theirs.bind(await channel.get_exchange(STATE_CHANGES_EXCHANGE), "run.parent.#")
        # Runs, child runs and their steps go through: every process opens what it takes.
        shown = run_parent_of_child_runs(cluster, tmp_path, [1, 2])
        # What that service reads is the CloudEvent itself, signed beside it in a header
        # that the coordinator's public key checks (docs/triggers.md).
        changes = []
        while (message := await theirs.get(no_ack=True, fail=False)) is not None:
            changes.append(message)
        await theirs.delete(if_unused=False, if_empty=False)
    assert [json.loads(m.body)["type"] for m in changes] == [
        "dev.conveyor.run.running",
        "dev.conveyor.run.succeeded",
    ]
    public = KeyRing.parse(next(e for e in sets[Role.WORKER].split(",") if "public" in e))
    for message in changes:
        signature = str(message.headers["conveyor-signature"]).encode()
        assert public.check(signature, message.body, {Role.COORDINATOR})[0] == Role.COORDINATOR
    assert shown["outputs"] == {"all": [{"twice": 2}, {"twice": 4}]}

    # What a worker's host holds cannot sign a task message, and a key pair of its own
    # under the coordinator's key id does not open on the workers.
    from conveyor.keys import new_pair

    worker_host = KeyRing.parse(sets[Role.WORKER])
    with pytest.raises(SignatureError, match="no key here signs as coordinator"):
        worker_host.sign(Role.COORDINATOR, b"task")
    marker = tmp_path / "PWNED"
    forged_task = TaskReady(
        run_id=shown["run_id"],
        task="each",
        attempt=9,
        step=StepSpec(kind="command", argv=["touch", str(marker)]),
        reply_to=shard_queue(0),
    )
    coordinator_id = next(
        entry.split(":")[1]
        for entry in sets[Role.WORKER].split(",")
        if entry.startswith("coordinator:")
    )
    forger = KeyRing.parse(f"coordinator:{coordinator_id}:{new_pair()[0]}")
    for signed in (
        forger.sign(Role.COORDINATOR, encode_tasks([forged_task])),
        worker_host.sign(Role.WORKER, encode_tasks([forged_task])),
    ):
        await publish_raw(cluster.amqp_url, task_queue("default"), signed)
    assert len(await dead_lettered(cluster.amqp_url, 2)) == 2
    assert not marker.exists()
    again = cli(cluster, "submit", str(tmp_path / "child.yaml"), "-p", "n=5", "--wait", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["outputs"] == {"twice": 10}


def test_a_coordinator_given_a_worker_s_set_does_not_start(tmp_path: Path) -> None:
    from conveyor.keys import new_key_sets

    env = {
        "CONVEYOR_SIGNING_KEYS": new_key_sets()[Role.WORKER],
        "CONVEYOR_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "CONVEYOR_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    started = run_cli("coordinator", cwd=tmp_path, env=env)
    assert started.returncode == 2, started.stdout + started.stderr
    assert "no key to sign as the coordinator role (only a public key)" in started.stderr
    assert "no key to check the client role's messages with" in started.stderr
