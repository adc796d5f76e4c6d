"""The run's timeline: bars placed as shares of the run's span, so the picture stretches
to any width, and an axis of round times; names that fit the boxes and the labels."""

from __future__ import annotations

import itertools

import pytest

from contracts.events import (
    Event,
    RunSubmitted,
    TaskDispatched,
    TaskExpanded,
    TaskStarted,
    TaskSucceeded,
)
from conveyor.server.pictures import BOX_NAME_CHARS, LABEL_CHARS, MIN_BAR, dag, ticks, timeline
from engine.state.fold import fold, new_state
from engine.state.model import RunState

WORKFLOW = {
    "name": "wf",
    "tasks": [
        {"name": "a", "script": "true"},
        {"name": "b", "depends": ["a"], "script": "true"},
    ],
}


def run(events: list[Event]) -> RunState:
    state = new_state(RunSubmitted(run_id="r", at=100.0, workflow=WORKFLOW, params={}))
    for event in events:
        fold(state, event)
    return state


def test_bars_are_shares_of_the_run_span() -> None:
    events: list[Event] = [
        TaskExpanded(run_id="r", at=100.0, task="a", index=-1, count=1),
        TaskDispatched(run_id="r", at=100.5, task="a"),
        TaskStarted(run_id="r", at=101.0, task="a"),
        TaskSucceeded(run_id="r", at=103.0, task="a"),
        TaskExpanded(run_id="r", at=103.0, task="b", index=-1, count=1),
        TaskDispatched(run_id="r", at=103.0, task="b"),
        TaskStarted(run_id="r", at=103.0, task="b"),
    ]
    state = run(events)
    # b runs on: the picture ends now, at 104, a span of 4 s.
    for picture in (timeline(state, 104.0), timeline(state, 104.0, events)):
        assert picture.span == pytest.approx(4.0)
        a, b = picture.bars
        assert (a.start, a.length) == pytest.approx((0.25, 0.5))
        assert (b.start, b.length) == pytest.approx((0.75, 0.25))
        assert b.state == "running"


def test_a_step_of_an_instant_still_shows() -> None:
    events: list[Event] = [
        TaskExpanded(run_id="r", at=100.0, task="a", index=-1, count=1),
        TaskDispatched(run_id="r", at=101.0, task="a"),
        TaskStarted(run_id="r", at=101.0, task="a"),
        TaskSucceeded(run_id="r", at=101.0, task="a"),
    ]
    (bar,) = timeline(run(events), 200.0).bars
    assert bar.length == MIN_BAR


@pytest.mark.parametrize(
    ("span", "labels"),
    [
        (2.62, ["0s", "0.5s", "1.0s", "1.5s", "2.0s", "2.5s"]),
        (45.0, ["0s", "10s", "20s", "30s", "40s"]),
        (200.0, ["0s", "1m", "2m", "3m"]),
        (5000.0, ["0s", "15m", "30m", "45m", "1h", "1h15m"]),
        (90000.0, ["0s", "6h", "12h", "18h", "24h"]),
    ],
)
def test_the_axis_names_round_times(span: float, labels: list[str]) -> None:
    found = ticks(span)
    assert [tick.label for tick in found] == labels
    assert found[0].at == 0
    assert all(b.at - a.at > 0 for a, b in itertools.pairwise(found))
    assert found[-1].at <= 1


@pytest.mark.parametrize("span", [0.001, 0.0137, 0.9, 7.3, 59.0, 61.0, 1234.5, 86400.0 * 9])
def test_the_axis_has_a_few_evenly_spaced_ticks_within_the_span(span: float) -> None:
    found = ticks(span)
    assert 3 <= len(found) <= 13
    steps = {round(b.at - a.at, 9) for a, b in itertools.pairwise(found)}
    assert len(steps) == 1
    (step,) = steps
    assert found[-1].at <= 1 + 1e-9 < found[-1].at + step  # the last tick within the span


def test_long_names_are_cut_in_the_middle_and_stay_told_apart() -> None:
    names = [f"extract_source_number_{n}" for n in range(12)]
    tasks = [{"name": name, "script": "true"} for name in names]
    state = new_state(
        RunSubmitted(run_id="r", at=100.0, workflow={"name": "wide", "tasks": tasks}, params={})
    )
    for name in names:
        fold(state, TaskExpanded(run_id="r", at=100.0, task=name, index=-1, count=1))
        fold(state, TaskDispatched(run_id="r", at=100.0, task=name))
        fold(state, TaskStarted(run_id="r", at=100.5, task=name))
    boxes = [box.shown_name for box in dag(state).boxes]
    labels = [bar.shown_name for bar in timeline(state, 101.0).bars]
    for shown, chars in ((boxes, BOX_NAME_CHARS), (labels, LABEL_CHARS)):
        assert len(set(shown)) == len(names)
        assert all(len(text) <= chars and "…" in text for text in shown)
    assert boxes[11] == "extract_so…_number_11"
    assert labels[0] == "extract_sou…e_number_0"
    short = new_state(RunSubmitted(run_id="s", at=100.0, workflow=WORKFLOW, params={}))
    assert [box.shown_name for box in dag(short).boxes] == ["a", "b"]
