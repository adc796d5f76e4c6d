"""A step reads and writes only inside its own directory, whatever links it makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import InvalidInput
from contracts.messages import StepSpec, TaskReady
from contracts.validation import parse_workflow
from workers.executors import ExecutorChain, ProcessExecutor, StepCall


def lines(stream: str, text: str) -> None:
    return None


async def run_script(source: str, outputs: dict[str, str], workdir: Path) -> tuple[bool, str, dict]:
    task = TaskReady(
        run_id="r",
        task="t",
        step=StepSpec(kind="script", source=source, interpreter="sh", outputs=outputs),
    )
    outcome = await ExecutorChain({"script": ProcessExecutor()}).run(StepCall(task, lines, workdir))
    return outcome.ok, outcome.error, outcome.outputs


@pytest.mark.parametrize(
    "target", ["/etc/hostname", "/proc/self/environ", "../outside.txt"], ids=["file", "proc", "up"]
)
async def test_an_output_linked_outside_the_step_is_refused(tmp_path: Path, target: str) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (tmp_path / "outside.txt").write_text("worker's secret")
    ok, error, outputs = await run_script(f"ln -s {target} leak.txt", {"leak": "leak.txt"}, workdir)
    assert not ok
    assert "'leak.txt' leads outside the step's working directory" in error
    assert outputs == {}


async def test_a_link_inside_the_step_is_followed(tmp_path: Path) -> None:
    ok, error, outputs = await run_script(
        "mkdir d; echo 42 > d/v; ln -s d/v link", {"v": "link"}, tmp_path
    )
    assert ok, error
    assert outputs == {"v": 42}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("outputs: {s: /etc/shadow}", "'/etc/shadow'"),
        ("outputs: {s: ../../etc/passwd}", "'../../etc/passwd'"),
        ("artifacts: {out: {a: /var/lib}}", "'/var/lib'"),
        ("artifacts: {in: {/tmp/x: 'https://example.com/x'}}", "'/tmp/x'"),
    ],
)
def test_paths_that_leave_the_step_are_refused_at_validation(field: str, value: str) -> None:
    text = f"name: w\ntasks:\n  - name: t\n    script: echo\n    {field}\n"
    with pytest.raises(InvalidInput) as caught:
        parse_workflow(text, source="w.yaml")
    message = caught.value.message
    assert message.startswith("w.yaml:5, tasks[0].")
    assert f"{value} must be a relative path inside the step's working directory" in message
