"""A re-run skips the steps whose inputs did not change, for as long as the cache says."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from contracts.errors import InvalidInput
from contracts.messages import CacheSpec, StepSpec, TaskReady
from contracts.validation import parse_workflow
from conveyor.testing import EPOCH, FakeClock, RunResult, run_workflow
from tests.steps import cached
from workers.artifacts import FsspecArtifactStore
from workers.cache import StepCache


@pytest.fixture
def ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "ran.txt"
    log.touch()
    monkeypatch.setenv("CACHED_STEPS_LOG", str(log))
    return log


@pytest.fixture
def store() -> FsspecArtifactStore:
    return FsspecArtifactStore(f"memory://cache-{uuid.uuid4().hex}")


def steps_run(log: Path) -> list[str]:
    lines = log.read_text().splitlines()
    log.write_text("")
    return sorted(lines)


def from_cache(result: RunResult, task: str) -> bool:
    return any("taken from the cache" in line for line in result.task(task).log_text("system"))


def test_a_rerun_with_the_same_inputs_runs_nothing_and_gives_the_same_results(
    ran: Path, store: FsspecArtifactStore
) -> None:
    first = run_workflow(cached.cached, {"n": 3}, artifacts=store)
    assert first.succeeded, first.reason
    assert steps_run(ran) == [
        "forecast oslo/1",
        "lookup oslo",
        "slow_square 1",
        "slow_square 2",
        "slow_square 3",
        "stored_set 3",
    ]
    second = run_workflow(cached.cached, {"n": 3}, artifacts=store)
    assert second.succeeded, second.reason
    assert steps_run(ran) == []
    for name in ("slow_square", "lookup", "forecast", "size"):
        assert second.task(name).result == first.task(name).result
    assert second.task("size").result == 3  # a stored (pickled) result, reused
    assert from_cache(second, "lookup") and not from_cache(first, "lookup")


def test_only_what_changed_runs_again(ran: Path, store: FsspecArtifactStore) -> None:
    run_workflow(cached.cached, {"n": 3}, artifacts=store)
    steps_run(ran)
    again = run_workflow(cached.cached, {"n": 4, "day": 2}, artifacts=store)
    assert again.succeeded, again.reason
    # One item of the fan-out changed; the forecast's key is the city alone (its key_fn).
    assert steps_run(ran) == ["slow_square 4", "stored_set 4"]
    assert again.task("slow_square").result == [1, 4, 16]
    assert again.task("forecast").result == "oslo on day 1"
    assert again.task("size").result == 4


def test_a_key_function_returning_none_never_caches(ran: Path, store: FsspecArtifactStore) -> None:
    for _ in range(2):
        run_workflow(cached.cached, {"city": "live"}, artifacts=store)
    assert steps_run(ran).count("forecast live/1") == 2


def test_an_expired_result_is_not_used(ran: Path, store: FsspecArtifactStore) -> None:
    run_workflow(cached.cached, artifacts=store, clock=FakeClock(EPOCH))
    steps_run(ran)
    # lookup expires after an hour; the others are kept until they change.
    run_workflow(cached.cached, artifacts=store, clock=FakeClock(EPOCH + 3599))
    assert steps_run(ran) == []
    run_workflow(cached.cached, artifacts=store, clock=FakeClock(EPOCH + 3601))
    assert steps_run(ran) == ["lookup oslo"]


def test_refresh_runs_anyway_and_records_the_new_result(
    ran: Path, store: FsspecArtifactStore
) -> None:
    run_workflow(cached.cached, artifacts=store)
    steps_run(ran)
    refreshed = run_workflow(cached.refreshed, artifacts=store)
    assert refreshed.succeeded and steps_run(ran) == ["lookup oslo"]


def test_a_failed_attempt_is_not_cached(ran: Path, store: FsspecArtifactStore) -> None:
    first = run_workflow(cached.cached, artifacts=store, failures={"lookup": 1})
    assert first.succeeded and first.attempts_of("lookup") == ["failed", "succeeded"]
    steps_run(ran)
    second = run_workflow(cached.cached, artifacts=store)
    assert steps_run(ran) == [] and from_cache(second, "lookup")


def message(step: StepSpec, item: object = None) -> TaskReady:
    return TaskReady(run_id="r", task="t", step=step, item=item)


def test_the_default_key_is_the_steps_content() -> None:
    cache = StepCache(None)
    base = StepSpec(kind="script", source="echo hi", cache=CacheSpec())
    same = StepSpec(kind="script", source="echo hi", cache=CacheSpec(expire=5), timeout=3)
    artifact = {"uri": "memory://x/a", "size": 1, "sha256": "0" * 64}
    keys = {
        cache.key_of(message(base)),
        cache.key_of(message(StepSpec(kind="script", source="echo ho", cache=CacheSpec()))),
        cache.key_of(message(base, item=1)),
        cache.key_of(
            message(StepSpec(kind="script", source="echo hi", env={"A": "1"}, cache=CacheSpec()))
        ),
        cache.key_of(
            message(
                StepSpec(
                    kind="script",
                    source="echo hi",
                    artifacts_in={"a": artifact},
                    cache=CacheSpec(),
                )
            )
        ),
        cache.key_of(
            message(
                StepSpec(
                    kind="script",
                    source="echo hi",
                    artifacts_in={"a": artifact | {"sha256": "1" * 64}},
                    cache=CacheSpec(),
                )
            )
        ),
    }
    assert len(keys) == 6  # every change of input is a different key
    assert cache.key_of(message(same)) == cache.key_of(message(base))  # policy is not input


def test_a_python_steps_key_follows_its_code() -> None:
    cache = StepCache(None)

    def key(target: str) -> str | None:
        step = StepSpec(kind="python", target=target, args={"x": 1}, cache=CacheSpec())
        return cache.key_of(message(step))

    assert key("tests.steps.cached:slow_square") == key("tests.steps.cached:slow_square")
    assert key("tests.steps.cached:slow_square") != key("tests.steps.cached:size")


def test_yaml_steps_cache_too(store: FsspecArtifactStore) -> None:
    spec = parse_workflow(
        """
name: cached-script
tasks:
  - name: stamp
    cache: {expire: 1h}
    script: python3 -c 'import uuid; print(uuid.uuid4().hex)'
"""
    )
    first = run_workflow(spec, artifacts=store)
    second = run_workflow(spec, artifacts=store)
    assert first.succeeded and second.succeeded
    assert second.task("stamp").result == first.task("stamp").result
    assert len(str(first.task("stamp").result)) == 32


def test_cache_is_refused_where_it_means_nothing() -> None:
    with pytest.raises(InvalidInput, match="'cache' does not apply to wait steps"):
        parse_workflow("name: w\ntasks:\n  - {name: gate, wait: {}, cache: true}\n")
    with pytest.raises(InvalidInput, match="key_fn' applies only to python steps"):
        parse_workflow("name: w\ntasks:\n  - {name: s, script: 'true', cache: {key_fn: 'm:f'}}\n")
    with pytest.raises(TypeError, match="cache_key_fn must be a module-level function"):
        cached.lookup.with_options(cache_key_fn=lambda c, p: "x")
