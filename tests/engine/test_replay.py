"""Recorded logs of real runs fold back into their final state; a divergent one is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.codec import decode_event
from contracts.errors import ReplayDivergence
from contracts.events import Event, RunCompleted, SignalReceived, TaskFailed, TaskSucceeded
from contracts.vocabulary import FailureKind
from engine.state import replay
from tests.engine.sim import Sim

LOGS = Path(__file__).parent.parent / "data" / "logs"


def load(name: str) -> list[Event]:
    return [decode_event(line) for line in (LOGS / name).read_text().splitlines() if line.strip()]


def test_batch_log_replays_to_its_final_state() -> None:
    state = replay(load("batch_succeeded.jsonl"), strict=True)
    assert state.status == "succeeded"
    process = state.nodes["process"]
    assert len(process.instances) == 5
    # Items 0 and 3 are flaky on their first attempt in the example.
    assert [i.attempt for i in process.instances] == [2, 1, 1, 2, 1]
    report = state.nodes["report"].outputs()["result"]
    assert report["items"] == 5 and report["total"] == sum(process.outputs()["result"])
    assert state.nodes["alert"].status == "skipped"


def test_failed_fanout_log_replays_to_its_final_state() -> None:
    state = replay(load("fanout_item_failed.jsonl"), strict=True)
    assert state.status == "failed"
    assert {n: s.status for n, s in state.nodes.items()} == {
        "fetch": "succeeded",
        "each": "failed",
        "summary": "skipped",
        "cleanup": "succeeded",
    }
    assert [i.status for i in state.nodes["each"].instances] == ["succeeded", "failed", "succeeded"]
    assert state.nodes["each"].instances[1].attempt == 2


def test_replay_is_exact_for_the_recorded_diamond() -> None:
    events = load("diamond_succeeded.jsonl")
    state = replay(events, strict=True)
    assert state.status == "succeeded"
    assert state.nodes["combine"].outputs()["result"] == {
        "label": "diamond",
        "square": 49,
        "half": 3.5,
    }
    completed = events[-1]
    assert isinstance(completed, RunCompleted) and state.finished_at == completed.at


def test_divergent_log_is_detected() -> None:
    with pytest.raises(ReplayDivergence, match="combine"):
        replay(load("diamond_divergent.jsonl"), strict=True)


def test_lenient_replay_of_an_interrupted_log_leaves_the_run_open() -> None:
    events = load("diamond_succeeded.jsonl")
    cut = next(
        i for i, e in enumerate(events) if isinstance(e, TaskSucceeded) and e.task == "square"
    )
    state = replay(events[: cut + 1], strict=True)  # a crash right after the result was appended
    assert not state.finished
    assert "combine" in state.evaluable  # recovery will decide it


def test_a_log_must_start_with_its_submission() -> None:
    with pytest.raises(ReplayDivergence, match="run_submitted"):
        replay(load("diamond_succeeded.jsonl")[1:])


def test_strict_replay_knows_a_wait_s_release_decided_after_another_decision() -> None:
    # One batch: a signal releasing two waiting items, and item 0's attempt lost. The
    # engine decides item 0's retry, then item 1's release (a success, the kind a
    # worker reports, decided here): the log agrees with the engine.
    sim = Sim("name: waits\ntasks: [{name: hold, items: [0, 1], wait: {}}]")
    signal = SignalReceived(run_id=sim.run_id, at=sim.now, name="hold", key="k")
    lost = TaskFailed(
        run_id=sim.run_id, at=sim.now, task="hold", error="gone", reason=FailureKind.LOST
    )
    decided = sim.send_together(signal, lost)
    assert [(e.kind, e.index) for e in decided] == [("retry_scheduled", 0), ("task_succeeded", 1)]
    assert replay(sim.log, strict=True).nodes["hold"].instances[1].status == "succeeded"
