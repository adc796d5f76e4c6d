"""A step gets what its workflow gives it and no more: not the worker's configuration,
not a flag smuggled in as an image, not its variables on a command line others see."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import InvalidInput
from contracts.messages import ContainerSpec, StepSpec, TaskReady
from contracts.validation import parse_workflow
from workers.executors import (
    ContainerExecutor,
    ContainerRuntime,
    ExecutorChain,
    ProcessExecutor,
    StepCall,
    StepOutcome,
)


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))


async def run(executor: object, step: StepSpec, workdir: Path) -> tuple[StepOutcome, Lines]:
    lines = Lines()
    task = TaskReady(run_id="r" * 32, task="t", step=step)
    chain = ExecutorChain({step.kind: executor})  # type: ignore[dict-item]
    try:
        return await chain.run(StepCall(task, lines, workdir)), lines
    finally:
        await chain.stop()  # as a worker does: background removals finish


async def test_script_steps_do_not_see_the_worker_s_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_AMQP_URL", "amqp://admin:hunter2@broker/")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-only")
    monkeypatch.setenv("LC_TIME", "C")
    outcome, lines = await run(
        ProcessExecutor(),
        StepSpec(kind="script", source="env", interpreter="sh", env={"MINE": "declared"}),
        tmp_path,
    )
    assert outcome.ok, outcome.error
    seen = dict(text.split("=", 1) for s, text in lines.lines if s == "stdout" and "=" in text)
    assert "CONVEYOR_AMQP_URL" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    assert "hunter2" not in "\n".join(text for _s, text in lines.lines)
    assert seen["MINE"] == "declared" and seen["LC_TIME"] == "C" and "PATH" in seen
    assert seen["CONVEYOR_TASK"] == "t"


async def test_an_operator_can_pass_named_variables_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "batch")
    monkeypatch.setenv("CONVEYOR_STEP_ENV", "AWS_PROFILE, OTHER")
    outcome, _ = await run(
        ProcessExecutor(), StepSpec(kind="script", source="echo $AWS_PROFILE"), tmp_path
    )
    assert outcome.ok and outcome.result == "batch"


@pytest.fixture
def recording_runtime(tmp_path: Path) -> tuple[ContainerRuntime, Path]:
    """A stand-in for podman that records its command line and its env file."""
    record = tmp_path / "argv"
    fake = tmp_path / "fake-podman"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1" = run ] || exit 0\n'  # (removing the container afterwards: nothing to record)
        f'printf "%s\\n" "$@" > {record}\n'
        'while [ $# -gt 0 ]; do [ "$1" = --env-file ] && cat "$2" > '
        f"{record}.env; shift; done\n"
    )
    fake.chmod(0o755)
    return ContainerRuntime(binary=str(fake)), record


async def test_container_variables_travel_in_a_private_file_not_on_the_command_line(
    tmp_path: Path, recording_runtime: tuple[ContainerRuntime, Path]
) -> None:
    runtime, record = recording_runtime
    workdir = tmp_path / "scratch" / "work"
    workdir.mkdir(parents=True)
    step = StepSpec(
        kind="container",
        container=ContainerSpec(image="busybox"),
        env={"TOKEN": "s3cr3t-value"},
    )
    outcome, _ = await run(ContainerExecutor(runtime, worker="w"), step, workdir)
    assert outcome.ok, outcome.error
    argv = record.read_text().splitlines()
    assert "s3cr3t-value" not in "\n".join(argv)
    assert "TOKEN=s3cr3t-value" in record.with_suffix(".env").read_text().splitlines()
    env_file = Path(argv[argv.index("--env-file") + 1])
    assert env_file.stat().st_mode & 0o077 == 0  # readable by the worker's user alone
    assert argv[argv.index("--") + 1] == "busybox"  # the image can never be a flag


@pytest.mark.parametrize("image", ["--volume=/:/host", "-v/:/host", " "])
async def test_an_image_that_would_be_a_flag_is_refused(
    tmp_path: Path, recording_runtime: tuple[ContainerRuntime, Path], image: str
) -> None:
    runtime, record = recording_runtime
    step = StepSpec(kind="container", container=ContainerSpec(image=image))
    outcome, _ = await run(ContainerExecutor(runtime, worker="w"), step, tmp_path)
    assert not outcome.ok and not outcome.retryable
    assert outcome.error == f"not an image: {image!r}"
    assert not record.exists()  # the runtime was never started


async def test_a_multi_line_container_variable_is_refused(
    tmp_path: Path, recording_runtime: tuple[ContainerRuntime, Path]
) -> None:
    runtime, record = recording_runtime
    step = StepSpec(
        kind="container",
        container=ContainerSpec(image="busybox"),
        env={"A": "x\nINJECTED=1"},
    )
    outcome, _ = await run(ContainerExecutor(runtime, worker="w"), step, tmp_path)
    assert not outcome.ok and "cannot hold line breaks" in outcome.error
    assert not record.exists()


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("container: {image: '--privileged'}", "String should match pattern"),
        ("script: 'true'\n    workdir: '{{ params.dir }}'", "workdir cannot be templated"),
        ("script: 'true'\n    env: {'A B': x}", "String should match pattern"),
    ],
)
def test_step_settings_that_reach_past_the_box_are_refused_at_validation(
    field: str, message: str
) -> None:
    text = (
        f"name: w\nparams: {{dir: {{type: str, default: x}}}}\ntasks:\n  - name: t\n    {field}\n"
    )
    with pytest.raises(InvalidInput, match=message):
        parse_workflow(text)


def test_the_environment_names_passed_through_are_documented() -> None:
    from workers.executors.process import PASSED_THROUGH

    docs = (Path(__file__).resolve().parents[2] / "docs" / "workflow-language.md").read_text()
    assert "CONVEYOR_STEP_ENV" in docs
    assert all(f"`{name}`" in docs for name in PASSED_THROUGH)
