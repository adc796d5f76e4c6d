"""Results JSON cannot carry travel through the artifact store in a chosen format; a
reference that a worker did not store is never read, let alone unpickled."""

from __future__ import annotations

import asyncio
import pickle
import uuid
from pathlib import Path

import msgspec
import pandas as pd
import pytest

from contracts.values import STORED_KEY
from conveyor import task
from conveyor.testing import run_workflow
from tests.steps import stored
from workers.artifacts import FsspecArtifactStore


def memory_store() -> FsspecArtifactStore:
    return FsspecArtifactStore(f"memory://stored-{uuid.uuid4().hex}")


def test_objects_and_frames_come_back_as_what_was_returned() -> None:
    result = run_workflow(stored.ledgers, {"owner": "ada"})
    assert result.succeeded, result.reason
    assert result.task("balance").result == "ada: 12"
    assert result.task("grand_total").result == 66  # 11 + 22 + 33, a fan-in of objects
    # A function with a timeout runs in a child process: values cross it both ways.
    assert result.task("balance_in_child").result == "ada: 7 (Ledger)"
    assert result.task("column_total").result == 30
    reference = result.task("open_ledger").result[STORED_KEY]
    assert reference["format"] == "pickle" and "/~values/" in reference["uri"]
    frame = result.task("frame").value
    assert isinstance(frame, pd.DataFrame) and list(frame["square"]) == [0, 1, 4, 9, 16]
    ledger = result.task("open_ledger").value
    assert isinstance(ledger, stored.Ledger) and ledger.entries == [3, 4, 5]


def test_a_stored_result_is_not_held_in_the_run_log() -> None:
    result = run_workflow(stored.ledgers)
    encoded = msgspec.json.encode(result.events)
    assert b"~values/result.parquet" in encoded
    assert b"PAR1" not in encoded  # the parquet bytes are not inline


def plant(store: FsspecArtifactStore, key: str, data: bytes) -> dict[str, object]:
    ref = asyncio.run(store.put_bytes(key, data))
    return {**msgspec.to_builtins(ref), "format": "pickle"}


class Explodes:
    """Unpickling this touches a file: the proof that forged data was run as code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "where",
    ["an output artifact's key", "outside the store", "a wrong digest"],
)
def test_a_forged_reference_in_a_parameter_is_refused(tmp_path: Path, where: str) -> None:
    store = memory_store()
    marker = tmp_path / "ran"
    payload = pickle.dumps(Explodes(marker))
    # What a step could have written with data an attacker sent it: an output artifact.
    reference = plant(store, "runs/r1/dump/0/1/payload", payload)
    if where == "outside the store":
        (tmp_path / "~values").mkdir()
        (tmp_path / "~values" / "x.pickle").write_bytes(payload)
        reference["uri"] = (tmp_path / "~values" / "x.pickle").as_uri()
    elif where == "a wrong digest":
        honest = run_workflow(stored.ledgers, artifacts=store)
        reference = dict(honest.task("open_ledger").result[STORED_KEY])
        asyncio.run(store.put_bytes(reference["uri"].split(store.url + "/")[1], payload))
    result = run_workflow(stored.forged, {"value": {STORED_KEY: reference}}, artifacts=store)
    assert result.status == "failed"
    errors = " ".join(str(result.task(t).error) for t in ("take", "take_in_child"))
    expected = {
        "an output artifact's key": "not a value stored by a worker",
        "outside the store": "is not in this store",
        "a wrong digest": "does not match its sha256",
    }[where]
    assert expected in errors
    assert not marker.exists()


def test_a_guessed_child_mark_is_only_data() -> None:
    value = {"$stored-00000000000000000000000000000000": 0}
    result = run_workflow(stored.forged, {"value": value})
    assert result.succeeded, result.reason
    assert result.task("take_in_child").result.startswith("dict: ")


def test_without_an_artifact_store_a_stored_result_fails_saying_so() -> None:
    from conveyor.embedded import EmbeddedEngine

    async def go() -> str:
        async with EmbeddedEngine(workers=1) as engine:
            state = await engine.run(stored.ledgers.spec, {"owner": "x"})
            return str(state.nodes["open_ledger"].error)

    assert "no artifact store is configured" in asyncio.run(go())


def test_a_type_the_wire_cannot_carry_says_how_to_store_it() -> None:
    with pytest.raises(TypeError) as caught:

        @task
        def make() -> stored.Ledger:
            return stored.Ledger("x")

    message = str(caught.value)
    assert "task 'make' result" in message and '"pickle" for any object' in message


def test_serializer_options_are_checked_where_the_task_is_declared() -> None:
    with pytest.raises(TypeError, match="result_serializer must be one of json, pickle"):
        task(result_serializer="yaml")(lambda: None)
    with pytest.raises(TypeError, match="set where the task is declared"):
        stored.balance.with_options(result_serializer="pickle")
