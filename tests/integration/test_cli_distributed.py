"""The distributed commands as a user runs them: submit, runs, show, logs, cancel, retry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.state import replay
from tests.integration.cluster import Cluster, started

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def cluster(amqp_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(amqp_url, redis_url, tmp_path)
    await c.reset()
    c.coordinator()
    c.worker(concurrency=2)
    yield c
    await c.close()


def cli(cluster: Cluster, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cluster.workdir,
        env={**cluster.env, "CONVEYOR_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_submit_wait_then_retry_the_failed_part(cluster: Cluster, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        f"""
name: fixable
tasks:
  - name: ok
    script: echo kept
  - name: needs-fix
    depends: [ok]
    script: test -f {flag} && echo fixed
  - name: after
    depends: [needs-fix]
    script: echo after
"""
    )
    first = cli(cluster, "submit", str(wf), "--wait", "--json")
    assert first.returncode == 1, first.stderr
    result = json.loads(first.stdout)
    assert [t["state"] for t in result["tasks"]] == ["succeeded", "failed", "skipped"]
    run_id = result["run_id"]

    flag.touch()
    again = cli(cluster, "retry", run_id[:10], "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    shown = json.loads(cli(cluster, "show", run_id, "--json").stdout)
    assert [t["state"] for t in shown["tasks"]] == ["succeeded", "succeeded", "succeeded"]
    events = [json.loads(line) for line in cli(cluster, "events", run_id).stdout.splitlines()]
    ok_runs = [e for e in events if e["type"] == "task_succeeded" and e["task"] == "ok"]
    assert len(ok_runs) == 1  # the successful task was kept, not run again
    logs = cli(cluster, "logs", run_id, "needs-fix").stdout
    assert "needs-fix#2 stdout| fixed" in logs
    listed = json.loads(cli(cluster, "runs", "--json").stdout)
    assert [(r["run_id"], r["state"]) for r in listed] == [(run_id, "succeeded")]


async def test_submit_prints_the_run_id_and_cancel_stops_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    wf = tmp_path / "long.yaml"
    wf.write_text("name: long\ntasks:\n  - name: s\n    script: sleep 60\n")
    submitted = cli(cluster, "submit", str(wf))
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    await cluster.wait_until(run_id, started("s"), 30, "the step to start")
    cancelled = cli(cluster, "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    state = await cluster.finished(run_id, timeout=10)
    assert state.status == "cancelled"
    again = cli(cluster, "cancel", run_id)
    assert again.returncode == 2 and "already cancelled" in again.stderr


async def test_dead_letters_are_counted(cluster: Cluster) -> None:
    from contracts.topology import shard_queue
    from engine.transport.rabbitmq import RabbitTransport

    transport = RabbitTransport(cluster.amqp_url)
    await transport.start()
    await transport.publish(shard_queue(0), [b"not an event"])
    await transport.close()
    import asyncio

    async with asyncio.timeout(20):
        while True:
            done = cli(cluster, "dead-letters", "--show", "5")
            if "1 dead-lettered" in done.stdout:
                break
            await asyncio.sleep(0.2)
    assert "not an event" in done.stdout


async def test_submit_a_python_workflow(cluster: Cluster, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("size: 3\n")
    done = cli(
        cluster, "submit", "scoring:scoring", "-f", str(values), "-p", "size=4", "--wait", "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert [t["state"] for t in result["tasks"]] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "skipped",
    ]
    assert result["tasks"][2]["outputs"]["result"]["items"] == 4  # -p over the file
    assert result["params"]["size"] == 4


async def test_logs_follow_prints_lines_as_they_come_and_ends_with_the_run(
    cluster: Cluster,
) -> None:
    import asyncio

    wf = cluster.workdir / "talk.yaml"
    wf.write_text(
        "name: talk\ntasks:\n  - name: t\n    script: |\n"
        "      for i in 1 2 3; do echo line $i; sleep 1; done\n"
    )
    run_id = cli(cluster, "submit", str(wf)).stdout.strip()
    await cluster.wait_until(run_id, started("t"), 30, "the step to start")
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor",
        "logs",
        run_id,
        "--follow",
        cwd=cluster.workdir,
        env={**cluster.env, "CONVEYOR_LOG_LEVEL": "warning"},
        stdout=asyncio.subprocess.PIPE,
    )
    first = await asyncio.wait_for(follower.stdout.readline(), 20)  # type: ignore[union-attr]
    assert first.decode().strip() == "t#1 stdout| line 1"
    assert not replay(await cluster.events(run_id)).finished  # it came while the step ran
    rest, _ = await asyncio.wait_for(follower.communicate(), 30)  # exits when the run ends
    assert rest.decode().splitlines() == ["t#1 stdout| line 2", "t#1 stdout| line 3"]
    assert follower.returncode == 0
