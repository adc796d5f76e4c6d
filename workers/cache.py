"""Cached step results: an attempt whose inputs were seen before is not run again.

The key is content-addressed: by default a digest of what the step is and what it is
given (its code, rendered arguments, command or script, environment, item, and the
digests of its input artifacts), so any change of input or code misses the cache. A
step may name its own key (``cache.key``, templated) or a function that computes it
(``cache.key_fn``, Prefect's ``cache_key_fn``). Entries live in the artifact store
(``cache/<key>.json``), which every worker of a deployment shares; an entry older than
its ``expire`` is not used.

What an entry holds is what the attempt reported (its result, outputs and artifact
references), so a cache hit costs a read of one small object, whatever the size of the
data it stands for.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from contracts.errors import StepError
from contracts.events import ArtifactRef
from contracts.messages import TaskReady
from contracts.ports import ArtifactStore
from workers.executors.base import LogEmitter, StepOutcome
from workers.executors.python import load_function

RunStep = Callable[[TaskReady, LogEmitter], Awaitable[StepOutcome]]


@dataclass(frozen=True)
class CacheContext:
    """What a ``key_fn`` is told about the attempt, beside its parameters."""

    run_id: str
    task: str
    index: int
    target: str | None


class CacheEntry(msgspec.Struct, kw_only=True):
    at: float
    expires: float | None
    run_id: str
    task: str
    index: int
    result: Any = None
    outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    artifacts: dict[str, ArtifactRef] = msgspec.field(default_factory=dict)


_decode_entry = msgspec.json.Decoder(CacheEntry).decode


class StepCache:
    def __init__(self, store: ArtifactStore | None, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def run(self, task: TaskReady, emit: LogEmitter, run_step: RunStep) -> StepOutcome:
        """The attempt's outcome: from the cache when its key is there, else by running it
        (and then recording a success under the key)."""
        policy = task.step.cache
        if policy is None or self._store is None:
            if policy is not None:
                emit("system", "not cached: no artifact store is configured")
            return await run_step(task, emit)
        try:
            key = self.key_of(task)
        except StepError as exc:
            emit("system", exc.message)
            return StepOutcome(ok=False, error=exc.message, reason=exc.kind, retryable=False)
        if key is None:
            return await run_step(task, emit)
        if not policy.refresh:
            entry = await self._lookup(key)
            if entry is not None:
                emit(
                    "system",
                    f"result taken from the cache (key {key[:12]}): run {entry.run_id},"
                    f" task {entry.task}[{entry.index}], {self._clock() - entry.at:.0f}s ago",
                )
                return StepOutcome(
                    ok=True, result=entry.result, outputs=entry.outputs, artifacts=entry.artifacts
                )
        outcome = await run_step(task, emit)
        if outcome.ok:
            try:
                await self._save(key, task, outcome, policy.expire)
            except Exception as exc:  # the step succeeded; only its reuse is lost
                emit("system", f"result not cached: {type(exc).__name__}: {exc}")
        return outcome

    def key_of(self, task: TaskReady) -> str | None:
        policy = task.step.cache
        assert policy is not None
        if policy.key_fn:
            return self._key_from_function(task, policy.key_fn)
        if policy.key is not None:
            material: Any = {"key": policy.key}
        else:
            material = {
                "step": msgspec.to_builtins(task.step),
                "item": task.item,
                "code": _code_digest(task),
            }
            material["step"].pop("cache", None)
            material["step"].pop("timeout", None)
        return hashlib.sha256(msgspec.json.encode(material, order="sorted")).hexdigest()

    def _key_from_function(self, task: TaskReady, target: str) -> str | None:
        function = load_function(target)
        context = CacheContext(task.run_id, task.task, task.index, task.step.target)
        try:
            takes = len(inspect.signature(function).parameters)
            value = (
                function(context, dict(task.step.args))
                if takes >= 2
                else function(dict(task.step.args))
            )
        except Exception as exc:  # a key function fails as user code does
            raise StepError(
                f"cache key function {target} failed: {type(exc).__name__}: {exc}",
                retryable=False,
            ) from exc
        if value is None:
            return None
        return hashlib.sha256(f"key_fn:{target}:{value}".encode()).hexdigest()

    async def _lookup(self, key: str) -> CacheEntry | None:
        assert self._store is not None
        try:
            data = await self._store.get_named(f"cache/{key}.json")
        except OSError:
            return None  # a store that cannot answer is a miss, not a failure
        if data is None:
            return None
        try:
            entry = _decode_entry(data)
        except msgspec.DecodeError:
            return None  # a torn or foreign object: run the step
        if entry.expires is not None and entry.expires <= self._clock():
            return None
        return entry

    async def _save(
        self, key: str, task: TaskReady, outcome: StepOutcome, expire: float | None
    ) -> None:
        assert self._store is not None
        now = self._clock()
        entry = CacheEntry(
            at=now,
            expires=None if expire is None else now + expire,
            run_id=task.run_id,
            task=task.task,
            index=task.index,
            result=outcome.result,
            outputs=outcome.outputs,
            artifacts=outcome.artifacts,
        )
        await self._store.put_named(f"cache/{key}.json", msgspec.json.encode(entry))


def _code_digest(task: TaskReady) -> str | None:
    """A digest of a python step's function source, so editing the code misses the cache."""
    if task.step.kind != "python" or not task.step.target:
        return None
    return _source_digest(task.step.target)


@functools.lru_cache(maxsize=1024)
def _source_digest(target: str) -> str:
    # Once per function: a worker imports a module once, so its source cannot change
    # under it (and reading it for every cached attempt of a fan-out is wasted I/O).
    function = load_function(target)
    code = getattr(function, "fn", function)  # the function a @task wraps
    try:
        source = inspect.getsource(code)
    except (OSError, TypeError):
        source = repr(getattr(code, "__code__", code))
    return hashlib.sha256(source.encode()).hexdigest()
