"""Around a step: input artifacts in, output artifacts out, oversized values by reference.

Results and output parameters larger than ``INLINE_LIMIT`` go to the artifact store
and travel as ``{"$claim": <reference>}`` (the claim-check pattern); the coordinator
swaps them back before use, so the run log never holds big payloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from contracts.errors import StepError
from contracts.events import ArtifactRef
from contracts.messages import TaskReady
from contracts.ports import ArtifactStore, run_artifacts
from contracts.values import (
    MAX_VALUE_BYTES,
    STORED_KEY,
    STREAMED_FORMAT,
    VALUE_FORMATS,
    VALUES_FOLDER,
    EncodedValue,
    StoredValue,
    is_stored,
)
from contracts.vocabulary import CLAIM_KEY, FailureKind
from workers.executors.base import StepOutcome, confined

INLINE_LIMIT = 64 * 1024
"""Largest value a message carries inline; a bigger one goes to the artifact store."""

MAX_DEPTH = 100
"""How deeply a result may nest lists and maps: every component that decodes it must be
able to (JSON decoders stop near a thousand levels)."""


def _deeper_than(value: Any, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        current, depth = pending.pop()
        if isinstance(current, list | tuple | dict):
            if depth > limit:
                return True
            children = current.values() if isinstance(current, dict) else current
            pending.extend((child, depth + 1) for child in children)
    return False


def inside(workdir: Path, relative: str) -> Path:
    """``workdir / relative``, refusing paths that escape the working directory."""
    return confined(workdir, relative, "artifact path")


def _store(store: ArtifactStore | None) -> ArtifactStore:
    if store is None:
        raise StepError(
            "this step uses artifacts but no artifact store is configured", kind=FailureKind.START
        )
    return store


async def stage_inputs(task: TaskReady, workdir: Path, store: ArtifactStore | None) -> None:
    for relative, source in task.step.artifacts_in.items():
        target = inside(workdir, relative)
        if isinstance(source, str):
            if "://" not in source:
                raise StepError(
                    f"input artifact {relative!r}: {source!r} is not a URL", retryable=False
                )
            await _store(store).fetch_url(source, target)
        elif isinstance(source, list):
            target.mkdir(parents=True, exist_ok=True)
            for index, ref in enumerate(source):
                if ref is not None:
                    await _store(store).get_path(_ref(ref), target / str(index))
        elif isinstance(source, dict):
            await _store(store).get_path(_ref(source), target)
        elif source is None:
            raise StepError(
                f"input artifact {relative!r}: the upstream task produced none", retryable=False
            )
        else:
            raise StepError(
                f"input artifact {relative!r}: not an artifact: {source!r}", retryable=False
            )


def _ref(data: Any) -> ArtifactRef:
    try:
        return msgspec.convert(data, ArtifactRef)
    except msgspec.ValidationError as exc:
        raise StepError(f"not an artifact reference: {data!r}", retryable=False) from exc


def _key(task: TaskReady, name: str) -> str:
    return f"{run_artifacts(task.run_id)}/{task.task}/{task.index}/{task.attempt}/{name}"


async def store_outputs(
    task: TaskReady,
    workdir: Path,
    store: ArtifactStore | None,
    outcome: StepOutcome,
    max_value_bytes: int = MAX_VALUE_BYTES,
) -> None:
    """Upload output artifacts and move oversized values out of line, in place."""
    for name, relative in task.step.artifacts_out.items():
        source = inside(workdir, relative)
        if not source.exists():
            raise StepError(
                f"output artifact {name!r}: the step did not write {relative!r}", retryable=False
            )
        outcome.artifacts[name] = await _store(store).put_path(_key(task, name), source)
    if isinstance(outcome.result, EncodedValue):
        outcome.result = await _store_value(task, outcome.result, store)
    outcome.result = await _claim_if_large(task, "result", outcome.result, store, max_value_bytes)
    for name, value in list(outcome.outputs.items()):
        outcome.outputs[name] = await _claim_if_large(
            task, f"output-{name}", value, store, max_value_bytes
        )


async def _claim_if_large(
    task: TaskReady, name: str, value: Any, store: ArtifactStore | None, most: int
) -> Any:
    """The value itself when small; else a claim on it in the artifact store."""
    if _deeper_than(value, MAX_DEPTH):
        raise StepError(
            f"{name} is nested more than {MAX_DEPTH} levels deep; flatten it or write it to"
            " an output artifact",
            retryable=False,
        )
    data = msgspec.json.encode(value)
    if len(data) > most:
        raise StepError(
            f"{name} is {len(data):,} bytes, over the {most:,}-byte ceiling"
            " (CONVEYOR_MAX_RESULT_BYTES); write big data to an output artifact",
            retryable=False,
        )
    if len(data) <= INLINE_LIMIT or store is None:
        return value
    ref = await store.put_bytes(_key(task, f"{name}.json"), data)
    return {CLAIM_KEY: msgspec.to_builtins(ref)}


async def _store_value(task: TaskReady, value: EncodedValue, store: ArtifactStore | None) -> Any:
    if store is None:
        raise StepError(
            f"this task's result is to be stored as {value.format}, but no artifact store is"
            " configured (CONVEYOR_ARTIFACTS_URL)",
            kind=FailureKind.START,
            retryable=False,
        )
    key = _key(task, f"{VALUES_FOLDER}/result.{value.format}")
    ref = await store.put_bytes(key, value.data)
    reference = {**msgspec.to_builtins(ref), "format": value.format}
    if value.format == STREAMED_FORMAT:
        reference["count"] = value.data.count(b"\n")  # one line per item
    return {STORED_KEY: reference}


async def fetch_stored_values(task: TaskReady, store: ArtifactStore | None) -> TaskReady:
    """The task with each stored value in its arguments fetched, as a ``StoredValue``.

    Only a reference into the stored-values folder of this worker's store is fetched
    (a forged one, in a parameter say, is refused), and its bytes must match the sha256.
    """
    args = task.step.args
    if task.step.kind != "python" or not args or not _holds_stored(args):
        return task
    fetched = await fetch_stored(args, store)
    return msgspec.structs.replace(task, step=msgspec.structs.replace(task.step, args=fetched))


def _holds_stored(value: Any) -> bool:
    if isinstance(value, dict):
        return STORED_KEY in value or any(_holds_stored(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_stored(v) for v in value)
    return False


async def fetch_stored(value: Any, store: ArtifactStore | None) -> Any:
    """``value`` with each stored-value reference inside it fetched as a ``StoredValue``."""
    if is_stored(value):
        return await _fetch_value(value[STORED_KEY], store)
    if isinstance(value, dict):
        return {k: await fetch_stored(v, store) for k, v in value.items()}
    if isinstance(value, list):
        return [await fetch_stored(v, store) for v in value]
    return value


async def _fetch_value(reference: Any, store: ArtifactStore | None) -> StoredValue:
    format = reference.get("format") if isinstance(reference, dict) else None
    fields = {k: v for k, v in reference.items() if k not in ("format", "count")} if format else {}
    ref = _ref(fields) if format else None
    if (
        ref is None
        or format not in VALUE_FORMATS
        or f"/{VALUES_FOLDER}/" not in ref.uri
        or "/../" in ref.uri
    ):
        raise StepError(
            f"an argument is not a value stored by a worker: {reference!r}", retryable=False
        )
    # The store refuses a reference outside itself, and bytes that do not match.
    return StoredValue(await _store(store).get_bytes(ref), str(format))
