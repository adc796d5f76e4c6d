"""Container steps on a real runtime (Podman here; Docker works the same way)."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from contracts.messages import ContainerSpec, StepSpec, TaskReady
from workers.executors import (
    ContainerExecutor,
    ContainerRuntime,
    ExecutorChain,
    StepCall,
    StepOutcome,
)


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[float, str, str]] = []
        self.first = asyncio.Event()

    def __call__(self, stream: str, text: str) -> None:
        self.lines.append((time.monotonic(), stream, text))
        self.first.set()

    def of(self, stream: str) -> list[str]:
        return [text for _t, s, text in self.lines if s == stream]


def task(
    image: str,
    *,
    timeout: float | None = None,
    outputs: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    run_id: str = "r" * 32,
    **container: Any,
) -> TaskReady:
    return TaskReady(
        run_id=run_id,
        task="c",
        attempt=1,
        step=StepSpec(
            kind="container",
            container=ContainerSpec(image=image, **container),
            outputs=outputs or {},
            env=env or {},
            timeout=timeout,
        ),
    )


async def run(runtime: ContainerRuntime, message: TaskReady) -> tuple[StepOutcome, Lines]:
    lines = Lines()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch) / "work"
        workdir.mkdir()
        executor = ContainerExecutor(runtime, worker="test:1")
        # Through the chain, as a worker runs steps: the chain enforces timeouts.
        outcome = await ExecutorChain({"container": executor}).run(
            StepCall(message, lines, workdir)
        )
        await executor.drain()  # removals run in the background
    return outcome, lines


def containers_of(runtime: ContainerRuntime, run_id: str) -> list[str]:
    done = subprocess.run(
        [
            *runtime.base(),
            "ps",
            "-a",
            "--filter",
            f"label=conveyor.run={run_id}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
    )
    return done.stdout.split()


async def test_command_env_result_and_outputs(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    outcome, lines = await run(
        container_runtime,
        task(
            busybox_image,
            command=["sh", "-c"],
            args=['echo "$GREETING $CONVEYOR_TASK" >&2; echo 7 > n.txt; echo \'{"ok": true}\''],
            env={"GREETING": "hello"},
            outputs={"n": "n.txt"},
        ),
    )
    assert outcome.ok, outcome.error
    assert outcome.result == {"ok": True} and outcome.outputs == {"n": 7}
    assert lines.of("stderr") == ["hello c"]


async def test_an_output_linked_to_a_host_file_is_refused(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    # Inside the container the link names the container's file; the worker reading the
    # mounted directory would follow it to the host's.
    outcome, _ = await run(
        container_runtime,
        task(
            busybox_image,
            script="ln -s /etc/hostname host.txt; ln -s /proc/self/environ env.txt",
            outputs={"host": "host.txt", "env": "env.txt"},
        ),
    )
    assert not outcome.ok
    assert "leads outside the step's working directory" in outcome.error
    assert outcome.outputs == {}


async def test_inline_script_in_an_image(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    outcome, _ = await run(
        container_runtime, task(busybox_image, script="for i in 1 2 3; do echo $i; done | wc -l")
    )
    assert outcome.ok and outcome.result == 3


async def test_exit_codes_are_failures(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    outcome, _ = await run(container_runtime, task(busybox_image, command=["sh", "-c", "exit 3"]))
    assert not outcome.ok and outcome.exit_code == 3 and outcome.reason == "error"


async def test_logs_stream_while_the_container_runs(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    outcome, lines = await run(
        container_runtime,
        task(busybox_image, script="echo first; sleep 1; echo second; echo third"),
    )
    assert outcome.ok
    stamps = {text: t for t, s, text in lines.lines if s == "stdout"}
    assert lines.of("stdout") == ["first", "second", "third"]
    assert stamps["second"] - stamps["first"] > 0.7  # 'first' arrived before the step ended


async def test_timeout_stops_and_removes_the_container(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    run_id = "t" * 32
    outcome, _ = await run(
        container_runtime, task(busybox_image, script="sleep 60", timeout=1, run_id=run_id)
    )
    assert outcome.reason == "timeout"
    assert containers_of(container_runtime, run_id) == []


async def test_cancel_stops_and_removes_the_container(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    run_id = "k" * 32
    lines = Lines()
    with tempfile.TemporaryDirectory() as scratch:
        step = asyncio.create_task(
            ContainerExecutor(container_runtime, worker="test:1").run(
                task(busybox_image, script="echo up; sleep 60", run_id=run_id), lines, Path(scratch)
            )
        )
        await asyncio.wait_for(lines.first.wait(), 30)
        assert containers_of(container_runtime, run_id) != []
        step.cancel()
        with pytest.raises(asyncio.CancelledError):
            await step
    assert containers_of(container_runtime, run_id) == []


async def test_memory_limit_kill_is_reported_as_oom(
    container_runtime: ContainerRuntime,
    busybox_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    monkeypatch.chdir(worker_dir)
    # Grow a string until the 16 MiB limit stops it.
    hog = "awk 'BEGIN { s = \"x\"; while (1) s = s s }'"
    outcome, _ = await run(
        container_runtime, task(busybox_image, script=hog, memory="16m", timeout=60)
    )
    if outcome.ok or outcome.exit_code not in (137,):
        pytest.skip(f"this runtime does not enforce memory limits here (exit {outcome.exit_code})")
    assert "OOM-killed" in outcome.error and outcome.exit_code == 137
    # Nothing the runtime writes about the kill is left in the worker's directory.
    assert list(worker_dir.iterdir()) == []


async def test_image_not_found(container_runtime: ContainerRuntime) -> None:
    outcome, _ = await run(
        container_runtime, task("localhost/no-such-image:nope", command=["true"], pull="never")
    )
    assert not outcome.ok and outcome.reason == "start" and not outcome.retryable
    assert "image not found: localhost/no-such-image:nope" in outcome.error


async def test_missing_runtime(busybox_image: str) -> None:
    outcome, _ = await run(
        ContainerRuntime(binary="no-such-runtime-xyz"), task(busybox_image, command=["true"])
    )
    assert (
        not outcome.ok
        and outcome.reason == "start"
        and "container runtime not found" in outcome.error
    )


async def test_a_new_worker_removes_containers_of_dead_workers(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    import socket

    dead_owner = f"{socket.gethostname()}:999999:1"  # no such pid
    subprocess.run(
        [
            *container_runtime.base(),
            "run",
            "-d",
            "--name",
            "conveyor-orphan-test",
            "--label",
            "conveyor.run=orphan",
            "--label",
            f"conveyor.worker={dead_owner}",
            "--label",
            f"conveyor.host={socket.gethostname()}",
            *container_runtime.run_args,
            busybox_image,
            "sleep",
            "60",
        ],
        check=True,
        capture_output=True,
    )
    assert containers_of(container_runtime, "orphan") == ["conveyor-orphan-test"]
    executor = ContainerExecutor(container_runtime, worker="test:1")
    await executor.start()  # the removal goes on in the background ...
    await executor.stop()  # ... and a stop waits for it
    assert containers_of(container_runtime, "orphan") == []


async def test_a_runtime_that_cannot_list_containers_does_not_stop_a_worker_starting(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "podman"
    broken.write_text("#!/no/such/interpreter\n")  # found, but cannot be started
    broken.chmod(0o755)
    executor = ContainerExecutor(ContainerRuntime(binary=str(broken)), worker="test:1")
    with structlog.testing.capture_logs() as logs:
        await executor.start()
        await executor.stop()
    assert [entry["event"] for entry in logs] == ["could not look for orphaned containers"]


async def test_user_network_and_cpu_limits_are_applied(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    outcome, _ = await run(
        container_runtime,
        task(
            busybox_image,
            script="id -u; ls /sys/class/net | sort | tr '\\n' ' '",
            user="1234",
            network="none",
            cpus=0.5,
        ),
    )
    assert outcome.ok, outcome.error
    uid, interfaces = str(outcome.result).split("\n")
    assert uid == "1234"
    assert interfaces.split() == ["lo"]  # no network but loopback


async def test_permission_denied_is_reported(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    outcome, _ = await run(container_runtime, task(busybox_image, command=["/etc/hostname"]))
    assert not outcome.ok and outcome.reason == "start"
    assert "permission denied" in outcome.error.lower()


async def test_steps_run_with_few_capabilities_and_no_new_privileges(
    container_runtime: ContainerRuntime, busybox_image: str
) -> None:
    outcome, lines = await run(
        container_runtime,
        task(busybox_image, script="grep -E 'CapEff|NoNewPrivs' /proc/self/status"),
    )
    assert outcome.ok, outcome.error
    status = dict(line.split(":\t") for line in lines.of("stdout"))
    # CHOWN, DAC_OVERRIDE, FOWNER, SETGID and SETUID: bits 0, 1, 3, 6 and 7.
    assert int(status["CapEff"], 16) == 0b11001011
    assert status["NoNewPrivs"].strip() == "1"


@pytest.mark.parametrize(
    "payload",
    ["x; echo PWNED", "$(echo PWNED)", "`echo PWNED`", "'\"; echo PWNED; \"'", " lead and trail "],
    ids=["semicolon", "subshell", "backticks", "quotes", "spaces"],
)
async def test_a_value_reaches_a_container_intact_and_never_runs(
    container_runtime: ContainerRuntime, busybox_image: str, payload: str
) -> None:
    step = task(busybox_image, script='printf "%s" "$V"', env={"V": payload})
    outcome, _ = await run(container_runtime, step)
    assert outcome.ok, outcome.error
    assert outcome.result == payload.rstrip("\n")


async def test_a_step_runs_as_the_worker_s_user_unless_its_task_names_one(
    container_runtime: ContainerRuntime, busybox_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import os

    monkeypatch.delenv("CONVEYOR_CONTAINER_USER", raising=False)
    assert ContainerRuntime.from_env().default_user == f"{os.getuid()}:{os.getgid()}"
    # (A worker running as root would not tell the difference: run as another user.)
    runtime = dataclasses.replace(container_runtime, default_user="1234:1234")
    outcome, _ = await run(runtime, task(busybox_image, script="id -u; touch made-here"))
    assert outcome.ok, outcome.error
    assert outcome.result == 1234
    outcome, _ = await run(runtime, task(busybox_image, script="id -u", user="4242"))
    assert outcome.ok and outcome.result == 4242
