from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from contracts.messages import StepSpec, TaskReady
from tests.workers.cancelling import cancel_at_each_turn, open_descriptors
from workers.executors import (
    ExecutorChain,
    ProcessExecutor,
    PythonExecutor,
    StepCall,
    StepOutcome,
)
from workers.executors.orphans import WORKER_VARIABLE
from workers.executors.pyprocess import Child
from workers.executors.python import DaemonThreads


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.first = asyncio.Event()

    def __call__(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))
        self.first.set()

    def of(self, stream: str) -> list[str]:
        return [text for s, text in self.lines if s == stream]


def message(**step: Any) -> TaskReady:
    item = step.pop("item", None)
    return TaskReady(run_id="run", task="t", index=2, attempt=3, step=StepSpec(**step), item=item)


async def run_process(**step: Any) -> tuple[StepOutcome, Lines]:
    lines = Lines()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(step["workdir"]) if step.get("workdir") else Path(scratch)
        # Through the chain, as a worker runs steps: the chain enforces timeouts.
        chain = ExecutorChain({step["kind"]: ProcessExecutor()})
        outcome = await chain.run(StepCall(message(**step), lines, workdir))
    return outcome, lines


async def test_script_result_is_parsed_as_json_when_it_is_json() -> None:
    outcome, _ = await run_process(kind="script", source="echo '{\"a\": [1, 2]}'", interpreter="sh")
    assert outcome.ok and outcome.result == {"a": [1, 2]}
    outcome, _ = await run_process(kind="script", source="echo plain text", interpreter="sh")
    assert outcome.result == "plain text"


async def test_python_and_bash_interpreters() -> None:
    outcome, _ = await run_process(kind="script", source="print(6 * 7)", interpreter="python")
    assert outcome.result == 42
    outcome, _ = await run_process(
        kind="script", source="arr=(a b c); echo ${#arr[@]}", interpreter="bash"
    )
    assert outcome.result == 3


async def test_output_is_captured_line_by_line_per_stream() -> None:
    source = "for i in 1 2 3; do echo out$i; echo err$i >&2; done"
    outcome, lines = await run_process(kind="script", source=source, interpreter="sh")
    assert outcome.ok
    assert lines.of("stdout") == ["out1", "out2", "out3"]
    assert lines.of("stderr") == ["err1", "err2", "err3"]


async def test_env_workdir_and_conveyor_variables(tmp_path: Path) -> None:
    source = 'echo "$GREETING $CONVEYOR_TASK $CONVEYOR_INDEX $CONVEYOR_ATTEMPT $CONVEYOR_ITEM"; pwd'
    outcome, lines = await run_process(
        kind="script",
        source=source,
        interpreter="sh",
        env={"GREETING": "hi"},
        workdir=str(tmp_path),
        item={"k": 1},
    )
    assert outcome.ok
    assert lines.of("stdout") == ['hi t 2 3 {"k": 1}', str(tmp_path)]


async def test_named_outputs_are_read_from_files() -> None:
    outcome, _ = await run_process(
        kind="script",
        source="echo 5 > n.txt; echo hello > s.txt; echo '[1,2]' > l.json",
        interpreter="sh",
        outputs={"n": "n.txt", "s": "s.txt", "l": "l.json"},
    )
    assert outcome.ok and outcome.outputs == {"n": 5, "s": "hello", "l": [1, 2]}


async def test_a_missing_output_file_fails_the_step() -> None:
    outcome, _ = await run_process(
        kind="script", source="true", interpreter="sh", outputs={"x": "nowhere.txt"}
    )
    assert not outcome.ok and "did not write 'nowhere.txt'" in outcome.error


async def test_non_zero_exit_is_a_failure_with_its_code() -> None:
    outcome, lines = await run_process(
        kind="script", source="echo oops >&2; exit 7", interpreter="sh"
    )
    assert not outcome.ok and outcome.reason == "error" and outcome.exit_code == 7
    assert "exit code 7" in outcome.error and lines.of("stderr") == ["oops"]


async def test_commands_run_without_a_shell() -> None:
    outcome, _ = await run_process(kind="command", argv=["echo", "$HOME", "a b"])
    assert outcome.result == "$HOME a b"


async def test_a_missing_program_or_interpreter_cannot_start() -> None:
    outcome, _ = await run_process(kind="command", argv=["no-such-program-xyz"])
    assert not outcome.ok and outcome.reason == "start" and "not found" in outcome.error
    outcome, _ = await run_process(kind="script", source="x", interpreter="no-such-shell")
    assert not outcome.ok and outcome.reason == "start"


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_timeout_kills_the_whole_process_tree(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    source = f"sleep 60 & echo $! > {pidfile}; echo started; wait"
    outcome, lines = await run_process(kind="script", source=source, interpreter="sh", timeout=0.5)
    assert not outcome.ok and outcome.reason == "timeout"
    assert lines.of("stdout") == ["started"]
    assert _gone(int(pidfile.read_text()))


async def test_cancelling_kills_the_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    lines = Lines()
    run = asyncio.create_task(
        ProcessExecutor().run(
            message(
                kind="script", source=f"echo $$ > {pidfile}; echo go; sleep 60", interpreter="sh"
            ),
            lines,
            tmp_path,
        )
    )
    await lines.first.wait()
    assert lines.of("stdout") == ["go"]
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert _gone(int(pidfile.read_text()))


async def test_what_a_step_leaves_running_ends_with_it(tmp_path: Path) -> None:
    """A background process holds the step's output open: without ending it, the step
    would run for as long as the background process does."""
    pidfile = tmp_path / "background.pid"
    source = f"sleep 60 & echo $! > {pidfile}; echo done"
    outcome, lines = await asyncio.wait_for(
        run_process(kind="script", source=source, interpreter="sh"), 10
    )
    assert outcome.ok and outcome.result == "done"
    assert _gone(int(pidfile.read_text()))
    assert lines.of("system") == ["the step left processes running: they were killed"]


async def test_a_daemon_that_left_the_step_does_not_hold_it_open(tmp_path: Path) -> None:
    """A process that left the step's group (setsid) is out of its reach, but holds its
    output open: the step still ends, its pipes closed a moment after it exits."""
    pidfile = tmp_path / "daemon.pid"
    source = (
        f"(setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' &)\n"
        f"until [ -s {pidfile} ]; do sleep 0.01; done\n"
        f"cat {pidfile}"
    )
    outcome, _lines = await asyncio.wait_for(
        run_process(kind="script", source=source, interpreter="sh"), 10
    )
    assert outcome.ok
    daemon = psutil.Process(int(str(outcome.result)))
    try:
        assert os.getsid(daemon.pid) == daemon.pid  # it did leave the step's session
        assert daemon.is_running() and daemon.status() != psutil.STATUS_ZOMBIE
    finally:
        daemon.kill()


async def test_a_step_that_leaves_nothing_running_logs_no_kill() -> None:
    outcome, lines = await run_process(kind="script", source="echo done", interpreter="sh")
    assert outcome.ok and lines.of("system") == []


async def test_a_worker_ends_the_steps_a_gone_worker_of_its_host_left_running() -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid now names no process: a worker that is gone
    env = {"PATH": os.environ["PATH"]}
    orphan = subprocess.Popen(
        ["sleep", "60"], env={**env, WORKER_VARIABLE: f"embedded:{ended.pid}:default"}
    )
    living = subprocess.Popen(
        ["sleep", "60"], env={**env, WORKER_VARIABLE: f"embedded:{os.getpid()}:default"}
    )
    try:
        await ProcessExecutor(worker=f"embedded:{os.getpid()}:other").start()
        assert orphan.wait(timeout=10) == -9
        assert living.poll() is None  # its worker runs: not an orphan
    finally:
        for process in (orphan, living):
            process.kill()
            process.wait()


async def test_step_processes_carry_their_worker_s_name(tmp_path: Path) -> None:
    lines = Lines()
    step = message(kind="script", source=f"echo ${WORKER_VARIABLE}", interpreter="sh")
    step = msgspec.structs.replace(
        step, step=msgspec.structs.replace(step.step, env={WORKER_VARIABLE: "forged:1"})
    )
    outcome = await ProcessExecutor(worker="host:42").run(step, lines, tmp_path)
    assert outcome.ok and outcome.result == "host:42"  # not the task's own env


async def test_a_cancelled_step_leaves_no_pipe_open(tmp_path: Path) -> None:
    before = open_descriptors()
    lines = Lines()
    run = asyncio.create_task(
        ProcessExecutor().run(
            message(kind="script", source="echo go; sleep 60", interpreter="sh"), lines, tmp_path
        )
    )
    await lines.first.wait()
    assert len(open_descriptors() - before) >= 2  # the step's stdout and stderr
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert open_descriptors() - before == set()


async def test_a_process_that_left_the_step_does_not_hold_up_its_cancel(tmp_path: Path) -> None:
    """A daemon started by the step (its parent gone, so no longer in the step's tree)
    keeps the step's output pipes open: the cancel still ends within a bound, with the
    pipes closed on our side."""
    source = "(setsid sh -c 'echo $$; exec sleep 60' &); sleep 60"
    before = open_descriptors()
    lines = Lines()
    run = asyncio.create_task(
        ProcessExecutor().run(
            message(kind="script", source=source, interpreter="sh"), lines, tmp_path
        )
    )
    await lines.first.wait()  # the daemon's pid, written to the step's stdout
    daemon = psutil.Process(int(lines.of("stdout")[0]))
    try:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, 10)
        assert open_descriptors() - before == set()
        assert (
            daemon.is_running() and daemon.status() != psutil.STATUS_ZOMBIE
        )  # it outlived the step
    finally:
        daemon.kill()


async def test_a_cancel_while_a_step_child_starts_leaves_nothing_behind() -> None:
    """Cancelled at each point where starting a child for Python steps waits: no child
    process and no pipe is left."""

    async def close(child: Child) -> None:
        await child.close()

    await cancel_at_each_turn(Child.start, close)


async def run_python(
    target: str, timeout: float | None = None, **args: Any
) -> tuple[StepOutcome, Lines]:
    lines = Lines()
    chain = ExecutorChain({"python": PythonExecutor()})
    outcome = await chain.run(
        StepCall(
            message(kind="python", target=target, args=args, timeout=timeout), lines, Path(".")
        )
    )
    return outcome, lines


async def test_python_functions_sync_async_and_models() -> None:
    assert (await run_python("teststeps:add", a=2, b=3))[0].result == 5
    assert (await run_python("teststeps:async_double", x=21))[0].result == 42
    assert (await run_python("teststeps:point", x=1))[0].result == {"x": 1, "y": 2}
    assert (await run_python("teststeps:pid"))[0].result == os.getpid()  # in the worker process


async def test_python_exceptions_fail_with_traceback_in_the_log() -> None:
    outcome, lines = await run_python("teststeps:explode", message="kaboom")
    assert not outcome.ok and outcome.retryable and outcome.error == "RuntimeError: kaboom"
    assert any("Traceback" in text for text in lines.of("stderr"))
    outcome, _ = await run_python("teststeps:refuse")
    assert not outcome.ok and not outcome.retryable


async def test_a_missing_step_module_is_told_apart_from_a_missing_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where steps' modules are looked for is said when the step's module (or its
    package) is missing, not when a module it imports is."""
    (tmp_path / "needs_missing_dep.py").write_text("import no_such_dependency_k\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    outcome, _ = await run_python("needs_missing_dep:fn")
    assert "No module named 'no_such_dependency_k'" in outcome.error
    assert "CONVEYOR_PYTHON_PATH" not in outcome.error
    outcome, _ = await run_python("no_such_package_k.steps:fn")
    assert "CONVEYOR_PYTHON_PATH" in outcome.error


async def test_python_steps_that_cannot_start() -> None:
    outcome, lines = await run_python("no_such_module_xyz:fn")
    assert outcome.reason == "start" and "cannot import 'no_such_module_xyz'" in outcome.error
    assert lines.of("system") == [outcome.error]
    assert "its folder in CONVEYOR_PYTHON_PATH or as its current directory" in outcome.error
    assert os.getcwd() in outcome.error
    outcome, _ = await run_python("teststeps:nothing_here")
    assert outcome.reason == "start" and "has no function 'nothing_here'" in outcome.error
    outcome, _ = await run_python("teststeps:add", a=1)
    assert outcome.reason == "start" and "arguments do not match" in outcome.error


async def test_python_timeout() -> None:
    outcome, _ = await run_python("teststeps:slow", timeout=0.1, seconds=30)
    assert outcome.reason == "timeout"


async def test_a_blocking_function_is_stopped_when_its_time_is_up(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    outcome, lines = await run_python(
        "teststeps:sleep_after_pid", timeout=1.0, path=str(pidfile), seconds=30
    )
    assert outcome.reason == "timeout"
    assert time.monotonic() - started < 10
    assert lines.of("stdout") == ["sleeping"]
    pid = int(pidfile.read_text())
    assert pid != os.getpid()  # it ran in a child process ...
    assert _gone(pid)  # ... which is gone


async def test_a_blocking_function_is_stopped_when_cancelled(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    lines = Lines()
    executor = PythonExecutor()
    step = asyncio.create_task(
        ExecutorChain({"python": executor}).run(
            StepCall(
                message(
                    kind="python",
                    target="teststeps:sleep_after_pid",
                    args={"path": str(pidfile), "seconds": 30},
                    timeout=60,
                ),
                lines,
                Path("."),
            )
        )
    )
    await lines.first.wait()  # it printed: it is running
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert _gone(int(pidfile.read_text()))
    await executor.stop()


async def test_a_child_process_is_reused_and_its_output_recorded() -> None:
    executor = PythonExecutor()
    chain = ExecutorChain({"python": executor})
    pids = []
    for n in (2, 3):
        lines = Lines()
        outcome = await chain.run(
            StepCall(
                message(kind="python", target="teststeps:chatty", args={"n": n}, timeout=30),
                lines,
                Path("."),
            )
        )
        assert outcome.ok and outcome.result == n
        assert lines.of("stdout") == [f"line {i}" for i in range(n)]
        assert lines.of("stderr") == ["to stderr"]
        pid = await chain.run(
            StepCall(message(kind="python", target="teststeps:pid", timeout=30), Lines(), Path("."))
        )
        pids.append(pid.result)
    assert pids[0] == pids[1] != os.getpid()
    refused = await chain.run(
        StepCall(message(kind="python", target="teststeps:refuse", timeout=30), Lines(), Path("."))
    )
    assert not refused.ok and not refused.retryable and refused.error == "bad input, do not retry"
    await executor.stop()


@pytest.mark.parametrize("target", ["teststeps:chatty", "teststeps:async_chatty"])
async def test_what_a_step_in_the_worker_prints_is_its_log(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    executor = PythonExecutor()
    chain = ExecutorChain({"python": executor})
    first, second = Lines(), Lines()
    step = {"kind": "python", "target": target}
    outcomes = await asyncio.gather(
        chain.run(StepCall(message(**step, args={"n": 3}), first, Path("."))),
        chain.run(StepCall(message(**step, args={"n": 2}), second, Path("."))),
    )
    assert all(outcome.ok for outcome in outcomes)
    prefix = "async line" if "async" in target else "line"
    assert first.of("stdout") == [f"{prefix} {i}" for i in range(3)]
    assert second.of("stdout") == [f"{prefix} {i}" for i in range(2)]  # each its own
    expected = ["partial error line"] if "async" in target else ["to stderr"]
    assert first.of("stderr") == expected
    print("not a step's")  # outside a step, output goes where it always went
    assert "not a step's" in capsys.readouterr().out
    await executor.stop()


async def test_a_plain_function_runs_in_a_step_thread_and_a_coroutine_on_the_loop() -> None:
    """A plain function may block, so it never runs on the worker's event loop; a
    coroutine function does, with no thread to hand over to."""
    executor = PythonExecutor()
    chain = ExecutorChain({"python": executor})
    plain, coroutine = await asyncio.gather(
        chain.run(
            StepCall(message(kind="python", target="teststeps:thread_name"), Lines(), Path("."))
        ),
        chain.run(
            StepCall(
                message(kind="python", target="teststeps:async_thread_name"), Lines(), Path(".")
            )
        ),
    )
    assert plain.result == "conveyor-step"
    assert coroutine.result == threading.current_thread().name != "conveyor-step"
    await executor.stop()


def _step_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "conveyor-step"}


async def test_step_threads_are_reused_and_end_when_the_executor_stops() -> None:
    before = _step_threads()
    threads = DaemonThreads()
    for x in range(5):
        assert await threads.call(lambda x: x * 2, {"x": x}) == x * 2
    ours = _step_threads() - before
    assert len(ours) == 1  # one step at a time: one thread, reused
    threads.close()
    for thread in ours:
        thread.join(timeout=10)
        assert not thread.is_alive()


async def test_a_busy_step_thread_ends_when_its_function_returns_after_the_close() -> None:
    before = _step_threads()
    threads = DaemonThreads()
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(timeout=30)

    busy = asyncio.ensure_future(threads.call(hold, {}))
    assert await asyncio.to_thread(started.wait, 10)
    (thread,) = _step_threads() - before
    threads.close()
    # Served after the close by a new thread, not by the one still busy.
    assert await threads.call(threading.current_thread, {}) is not thread
    assert thread.is_alive()
    release.set()
    assert await busy is True
    thread.join(timeout=10)
    assert not thread.is_alive()
    threads.close()
