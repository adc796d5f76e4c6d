"""`conveyor delete` and `conveyor prune` as a user runs them, on a local home and on
Redis: what goes, what stays, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.events import RunCompleted, RunSubmitted
from engine.runlog.redis import RedisRunLog
from tests.e2e.commands import conveyor
from tests.e2e.test_local_control import LONG, killed, start

pytestmark = pytest.mark.timeout(120)

MAKES = """
name: makes
tasks:
  - name: write
    script: mkdir -p out && echo kept > out/a.txt
    artifacts:
      out: {a: out/a.txt}
"""
FAILS = "name: fails\ntasks: [{name: boom, script: echo broken; exit 4}]\n"


def run(tmp_path: Path, text: str, name: str) -> str:
    (tmp_path / name).write_text(text)
    done = conveyor("run", name, "--json", cwd=tmp_path)
    return str(json.loads(done.stdout)["run_id"])


def listed(tmp_path: Path) -> list[str]:
    done = conveyor("runs", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return [row["run_id"] for row in json.loads(done.stdout)]


def test_prune_and_delete_in_a_local_home(tmp_path: Path) -> None:
    made = run(tmp_path, MAKES, "makes.yaml")
    failed = run(tmp_path, FAILS, "fails.yaml")
    home = tmp_path / ".conveyor"
    assert (home / "artifacts" / "runs" / made).is_dir()
    assert (home / "locks" / f"{made}.lock").exists()

    young = conveyor("prune", "--older-than", "1h", cwd=tmp_path)
    assert young.returncode == 0 and young.stdout.startswith("deleted 0 runs"), young
    dry = conveyor("prune", "--older-than", "0", "--state", "failed", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert failed[:12] in dry.stdout and made[:12] not in dry.stdout
    assert "would delete 1 run that" in dry.stdout
    assert sorted(listed(tmp_path)) == sorted([made, failed])

    pruned = conveyor("prune", "--older-than", "0", "--state", "failed", cwd=tmp_path)
    assert pruned.returncode == 0 and "deleted 1 run that" in pruned.stdout, pruned
    assert listed(tmp_path) == [made]
    gone = conveyor("show", failed, cwd=tmp_path)
    assert gone.returncode == 2 and f"no run matches '{failed}'" in gone.stderr

    deleted = conveyor("delete", made[:10], cwd=tmp_path)
    assert deleted.returncode == 0 and deleted.stdout == f"deleted {made}\n", deleted
    assert listed(tmp_path) == []
    assert not (home / "artifacts" / "runs" / made).exists()
    assert list((home / "locks").iterdir()) == []
    unknown = conveyor("delete", made, cwd=tmp_path)
    assert unknown.returncode == 2 and "no run matches" in unknown.stderr


def test_a_run_going_on_is_neither_deleted_nor_pruned(tmp_path: Path) -> None:
    proc, _pid = start(tmp_path, LONG)
    try:
        [going] = listed(tmp_path)
        refused = conveyor("delete", going, cwd=tmp_path)
        assert refused.returncode == 2
        assert f"run {going} is still running: cancel it" in refused.stderr
        pruned = conveyor("prune", "--older-than", "0", cwd=tmp_path)
        assert pruned.returncode == 0 and "deleted 0 runs" in pruned.stdout
        assert listed(tmp_path) == [going]
    finally:
        killed(proc)


def test_bad_arguments_say_what_and_make_no_home(tmp_path: Path) -> None:
    period = conveyor("prune", "--older-than", "a week", cwd=tmp_path)
    assert period.returncode == 2 and "--older-than: invalid duration 'a week'" in period.stderr
    state = conveyor("prune", "--older-than", "1d", "--state", "running", cwd=tmp_path)
    assert state.returncode == 2 and "runs still running are never pruned" in state.stderr
    nothing = conveyor("prune", "--older-than", "1d", cwd=tmp_path)
    assert nothing.returncode == 2 and "no runs here" in nothing.stderr
    assert not (tmp_path / ".conveyor").exists()


async def test_prune_on_redis(redis_url: str, tmp_path: Path) -> None:
    store = RedisRunLog(redis_url)
    await store._redis.flushdb()
    for run_id, ended in (("old", 1_000.0), ("new", None)):
        submitted = RunSubmitted(run_id=run_id, at=900.0, workflow={"name": "wf"}, params={})
        await store.append(run_id, [submitted])
        if ended is not None:
            await store.append(run_id, [RunCompleted(run_id=run_id, at=ended, state="failed")])
    env = {"CONVEYOR_REDIS_URL": redis_url}
    pruned = conveyor("prune", "--older-than", "1d", cwd=tmp_path, extra_env=env)
    assert pruned.returncode == 0 and "deleted 1 run that" in pruned.stdout, pruned
    assert [row.run_id for row in await store.runs()] == ["new"]
    assert [k async for k in store._redis.scan_iter(match="cv:{old}:*")] == []
    await store.close()
