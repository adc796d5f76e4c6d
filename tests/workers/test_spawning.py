"""Starting step processes: output as streams, exits (codes and signals) on the loop,
nothing left behind, with or without a pidfd."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil
import pytest

from contracts.errors import StepError
from tests.workers.cancelling import cancel_at_each_turn
from workers.executors.spawning import MAX_ARG_STRLEN, Spawned, spawn

ENV = {"PATH": os.environ["PATH"]}


async def test_output_and_exit_code(tmp_path: Path) -> None:
    child = await spawn(["sh", "-c", "echo out; echo err >&2; exit 3"], cwd=tmp_path, env=ENV)
    assert child.stdout is not None and child.stderr is not None
    out, err = await asyncio.gather(child.stdout.read(), child.stderr.read())
    assert (out, err) == (b"out\n", b"err\n")
    assert await child.wait() == 3
    assert child.returncode == 3


async def test_a_signal_is_reported_as_minus_its_number(tmp_path: Path) -> None:
    child = await spawn(["sh", "-c", "kill -9 $$"], cwd=tmp_path, env=ENV)
    assert await asyncio.wait_for(child.wait(), 10) == -9


@pytest.mark.parametrize("pidfd", [True, False])
async def test_many_children_at_once_are_each_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    if not pidfd:  # an old kernel: a thread waits for each child instead

        def no_pidfd(_pid: int) -> int:
            raise OSError("pidfd_open: not supported")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    children = [
        await spawn(["sh", "-c", f"exit {n % 7}"], cwd=tmp_path, env=ENV) for n in range(50)
    ]
    codes = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), 30)
    assert codes == [n % 7 for n in range(50)]
    assert not [p for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE]


async def test_a_child_has_its_own_session(tmp_path: Path) -> None:
    child = await spawn(["sleep", "5"], cwd=tmp_path, env=ENV)
    try:
        assert os.getsid(child.pid) == child.pid != os.getsid(0)
    finally:
        os.killpg(child.pid, 9)
    assert await child.wait() == -9


async def test_what_cannot_start_raises_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await spawn(["no-such-program-anywhere"], cwd=tmp_path, env=ENV)
    with pytest.raises((FileNotFoundError, NotADirectoryError)):
        await spawn(["true"], cwd=tmp_path / "missing", env=ENV)


async def test_values_too_large_for_the_system_are_named(tmp_path: Path) -> None:
    big = "x" * MAX_ARG_STRLEN
    with pytest.raises(StepError) as raised:
        await spawn(["true"], cwd=tmp_path, env={**ENV, "BIG": big})
    assert raised.value.kind == "start" and not raised.value.retryable
    assert raised.value.message == (
        f"cannot start 'true': variable BIG is {MAX_ARG_STRLEN + 5:,} bytes, over the"
        f" {MAX_ARG_STRLEN:,} the system takes for one; pass large values as files (input"
        " artifacts)"
    )
    with pytest.raises(StepError, match=f"argument 1 is {MAX_ARG_STRLEN + 1:,} bytes, over the"):
        await spawn(["echo", big], cwd=tmp_path, env=ENV)
    many = {f"V{n}": "x" * 100_000 for n in range(30)}  # each fits; together they do not
    with pytest.raises(StepError, match=r"come to 3,\d{3},\d{3} bytes \(the system takes about"):
        await spawn(["true"], cwd=tmp_path, env={**ENV, **many})


async def test_a_cancel_while_starting_leaves_no_child_and_no_pipe(tmp_path: Path) -> None:
    """Cancelled at each point where starting a child waits (connecting its pipes to the
    loop): the child is killed and reaped, and none of its pipes stays open."""

    async def end(child: Spawned) -> None:
        child.kill()
        assert child.stdout is not None and child.stderr is not None
        await asyncio.gather(child.stdout.read(), child.stderr.read(), child.wait())

    await cancel_at_each_turn(lambda: spawn(["sleep", "60"], cwd=tmp_path, env=ENV), end, most=10)
