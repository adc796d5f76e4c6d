"""A fan-out's items a page at a time, forwards and back, of every state or of one."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.events import RunSubmitted, TaskDispatched, TaskExpanded, TaskFailed
from contracts.spec import Task
from contracts.vocabulary import TaskStatus
from conveyor.server.shapes import items_page, previous_offset
from engine.state import snapshot
from engine.state.fold import fold, new_state
from engine.state.model import Instance, Node

S, F = TaskStatus.SUCCEEDED, TaskStatus.FAILED


def fan_out(statuses: list[TaskStatus]) -> Node:
    node = Node(spec=Task(name="each", script="echo"), deps_left=0, ancestors=frozenset())
    node.instances = [Instance(status=status) for status in statuses]
    return node


def indexes(node: Node, state: str | None, offset: int, limit: int) -> list[int]:
    return [item["index"] for item in items_page(node, state=state, offset=offset, limit=limit)[0]]


# Items 0-11: every third one failed (0, 3, 6, 9).
TWELVE = [F if i % 3 == 0 else S for i in range(12)]


@pytest.mark.parametrize("state", [None, "failed", "succeeded"])
def test_previous_leads_back_through_the_pages_next_went_through(state: str | None) -> None:
    node = fan_out(TWELVE)
    pages, offset = [], 0
    while True:  # forwards
        pages.append((offset, indexes(node, state, offset, 2)))
        _, following = items_page(node, state=state, offset=offset, limit=2)
        if following is None:
            break
        offset = following
    back = []
    for offset, _ in reversed(pages):  # and back: each page's previous is the one before
        before = previous_offset(node, state=state, offset=offset, limit=2)
        back.append(None if before is None else indexes(node, state, before, 2))
    shown = [page for _, page in pages]
    assert back == [*reversed(shown[:-1]), None]


def test_previous_of_a_filtered_page_counts_items_of_its_state() -> None:
    node = fan_out(TWELVE)
    # The failed items from 9 on are [9]; the two failed ones before it are 3 and 6,
    # nine items back where 'offset - limit' would have said 7.
    assert previous_offset(node, state="failed", offset=9, limit=2) == 3
    assert indexes(node, "failed", 3, 2) == [3, 6]
    assert previous_offset(node, state="failed", offset=1, limit=2) == 0
    assert previous_offset(node, state=None, offset=0, limit=2) is None
    assert previous_offset(node, state="failed", offset=0, limit=2) is None


def test_next_is_where_the_next_item_of_the_state_is_and_none_after_the_last() -> None:
    node = fan_out(TWELVE)
    assert items_page(node, state="failed", offset=0, limit=2)[1] == 6
    assert items_page(node, state="failed", offset=6, limit=2)[1] is None  # 6 and 9: the last
    assert items_page(node, state=None, offset=10, limit=2)[1] is None
    assert items_page(node, state=None, offset=8, limit=2)[1] == 10


def test_a_state_no_item_can_be_in_is_an_empty_page_with_no_next_or_previous() -> None:
    node = fan_out(TWELVE)
    assert items_page(node, state="finished", offset=0, limit=2) == ([], None)
    assert previous_offset(node, state="finished", offset=12, limit=2) is None


class _Watched(list[Instance]):
    """A node's instances that count how many are read one by one."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        self.reads += 1
        return super().__getitem__(index)


def test_a_state_no_item_is_in_is_answered_from_the_counts_without_reading_items() -> None:
    """Filtering a million items for failures that are not there read every item."""
    node = fan_out(TWELVE)
    node.instances = watched = _Watched(node.instances)
    assert items_page(node, state="running", offset=0, limit=2) == ([], None)
    assert previous_offset(node, state="running", offset=12, limit=2) is None
    assert watched.reads == 0
    assert indexes(node, "failed", 0, 2) == [0, 3]
    assert watched.reads > 0


def test_items_read_from_a_snapshot_are_filtered_alike() -> None:
    """Pages compare states as the enum: a state loaded from a snapshot holds the same."""
    workflow = {"name": "wf", "tasks": [{"name": "each", "items": "range(4)", "script": "x"}]}
    state = new_state(RunSubmitted(run_id="r", at=1.0, workflow=workflow, params={}))
    fold(state, TaskExpanded(run_id="r", at=1.0, task="each", index=-1, count=4))
    fold(state, TaskDispatched(run_id="r", at=1.0, task="each", index=0))
    fold(state, TaskDispatched(run_id="r", at=1.0, task="each", index=1))
    fold(state, TaskFailed(run_id="r", at=2.0, task="each", index=1, error="boom"))
    loaded = snapshot.load(snapshot.dump(state))
    for node in (state.nodes["each"], loaded.nodes["each"]):
        by_state = {
            name: [item["index"] for item in items_page(node, state=name, offset=0, limit=9)[0]]
            for name in ("dispatched", "failed", "pending")
        }
        assert by_state == {"dispatched": [0], "failed": [1], "pending": [2, 3]}


def test_an_offset_past_the_last_item_is_an_empty_page_leading_back_to_the_last() -> None:
    node = fan_out(TWELVE)
    assert items_page(node, state=None, offset=500, limit=5) == ([], None)
    assert previous_offset(node, state=None, offset=500, limit=5) == 7
    assert previous_offset(node, state="failed", offset=500, limit=2) == 6
