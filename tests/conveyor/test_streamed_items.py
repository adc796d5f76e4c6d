"""A fan-out over a list stored as JSON Lines: fed item by item, never held whole by
the coordinator, surviving a coordinator that rebuilds the run from its log."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from contracts.errors import ConveyorError
from contracts.validation import parse_workflow
from contracts.values import STORED_KEY
from conveyor.testing import run_workflow
from engine.itemstream import load_items
from engine.state import snapshot
from engine.state.items import CHECKPOINT_EVERY, KEPT, StreamedItems
from engine.state.replay import replay
from tests.steps import streamed
from workers.artifacts import FsspecArtifactStore


def test_a_fan_out_over_stored_items_gets_each_item() -> None:
    n = 5000
    result = run_workflow(streamed.billing, {"count": n})
    assert result.succeeded, result.reason
    assert result.task("total").result == sum((100 + i) * 2 for i in range(n))
    assert result.task("count_all").result == n
    reference = result.task("orders").result[STORED_KEY]
    assert reference["format"] == "jsonl" and reference["count"] == n
    # The run log holds the reference, never the items.
    assert b'"cents":' not in msgspec.json.encode(result.events)


def test_the_state_counts_stored_items_and_a_snapshot_keeps_only_the_reference() -> None:
    n = KEPT + 2 * CHECKPOINT_EVERY  # more than the state keeps loaded
    result = run_workflow(streamed.billing, {"count": n})
    assert result.succeeded, result.reason
    state = replay(result.events)
    items = state.nodes["with_tax"].items
    assert isinstance(items, StreamedItems) and len(items) == n
    blob = snapshot.dump(state)
    assert b'"cents":' not in blob and len(blob) < 200 * n  # results, not the orders
    again = snapshot.load(blob).nodes["with_tax"].items
    assert isinstance(again, StreamedItems) and len(again) == n


def store_lines(lines: list[bytes]) -> tuple[FsspecArtifactStore, StreamedItems]:
    store = FsspecArtifactStore(f"memory://items-{uuid.uuid4().hex}")
    ref = asyncio.run(store.put_bytes("runs/r/t/0/1/~values/result.jsonl", b"".join(lines)))
    reference = {**msgspec.to_builtins(ref), "format": "jsonl", "count": len(lines)}
    return store, StreamedItems(reference, len(lines))


def test_items_are_read_forward_kept_in_a_window_and_read_again_when_needed() -> None:
    total = KEPT + 2 * CHECKPOINT_EVERY
    lines = [msgspec.json.encode({"n": i, "pad": "x" * (i % 7)}) + b"\n" for i in range(total)]
    store, items = store_lines(lines)
    asyncio.run(load_items(items, [0, 1, 2], store))
    assert [items[i]["n"] for i in (0, 1, 2)] == [0, 1, 2]
    with pytest.raises(Exception, match="not read before use"):
        items[3]
    asyncio.run(load_items(items, list(range(3, total)), store))
    assert items[total - 1] == {"n": total - 1, "pad": "x" * ((total - 1) % 7)}
    assert set(items.checkpoints) >= {0, CHECKPOINT_EVERY, KEPT}
    # Past the window the oldest items are let go; a retry of one reads it again,
    # from the checkpoint before it rather than from the start.
    with pytest.raises(Exception, match="not read before use"):
        items[CHECKPOINT_EVERY + 5]
    asyncio.run(load_items(items, [CHECKPOINT_EVERY + 5], store))
    assert items[CHECKPOINT_EVERY + 5]["n"] == CHECKPOINT_EVERY + 5


@pytest.mark.parametrize(
    ("lines", "count", "uri_part", "error"),
    [
        ([b'{"n": 1}\n', b"print('hi')\n"], 2, None, "item 1 is not JSON"),
        ([b'{"n": 1}\n'], 2, None, "ends after 1 items; its reference says 2"),
        ([b'{"n": 1}\n'], 1, "/elsewhere/", "not stored by a worker"),
    ],
    ids=["not-json", "shorter-than-its-count", "not-a-stored-value"],
)
def test_bad_stored_items_are_a_clear_error(
    lines: list[bytes], count: int, uri_part: str | None, error: str
) -> None:
    store, stored = store_lines(lines)
    items = StreamedItems(stored.reference, count)
    if uri_part is not None:
        items.reference["uri"] = items.uri.replace("/~values/", uri_part)
    with pytest.raises(ConveyorError, match=error):
        asyncio.run(load_items(items, list(range(count)), store))


FORGED = """
name: forged
params:
  orders: {type: dict}
tasks:
  - name: each
    items: "{{ params.orders }}"
    python: tests.steps.streamed:with_tax
    args: {order: "{{ item }}"}
"""


def test_a_stored_list_named_by_a_parameter_is_refused() -> None:
    """A webhook body or a parameter imitating a reference could otherwise make the
    coordinator read another run's stored values (or any file) into this run."""
    honest = run_workflow(streamed.billing, {"count": 3})
    reference = honest.task("orders").result[STORED_KEY]
    workflow = parse_workflow(FORGED)
    result = run_workflow(workflow, {"orders": {STORED_KEY: reference}})
    assert not result.succeeded
    assert "items stored as jsonl must come from a step of this run" in result.reason
    assert result.task("each").state == "failed"
