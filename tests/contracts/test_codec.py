from __future__ import annotations

from typing import get_args

import msgspec
import pytest

from contracts import codec
from contracts.codec import (
    DecodeError,
    decode_coordinator_input,
    decode_event,
    decode_tasks,
    encode,
    encode_events,
    encode_tasks,
)
from contracts.events import (
    AnyEvent,
    Event,
    EventBatch,
    RetryScheduled,
    RunCompleted,
    RunSubmitted,
    TaskDispatched,
    TaskFailed,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
)
from contracts.messages import Heartbeat, StepSpec, TaskReady
from contracts.vocabulary import RunStatus

EVENTS = [
    RunSubmitted(run_id="r", at=1.0, workflow={"name": "w"}, params={"n": 1}),
    TaskDispatched(run_id="r", at=2.0, task="a", index=3, attempt=2),
    TaskSucceeded(run_id="r", at=3.0, task="a", result={"x": [1, 2]}, outputs={"o": "v"}),
    TaskFailed(run_id="r", at=4.0, task="a", error="boom", reason="timeout", exit_code=None),
    RetryScheduled(run_id="r", at=5.0, task="a", attempt=2, due=6.5),
    RunCompleted(run_id="r", at=7.0, state="failed", reason="why"),
]


def _leaves(cls: type[Event]) -> set[type[Event]]:
    subclasses = cls.__subclasses__()
    return set().union(*map(_leaves, subclasses)) if subclasses else {cls}


def test_every_event_class_can_be_decoded_and_has_its_tag_as_kind() -> None:
    """An event's kind (part of its id) is set on the classes of ``AnyEvent``: one left
    out of it would be undecodable, and its events' ids would all share an empty kind."""
    assert _leaves(Event) == set(get_args(AnyEvent))
    for cls in _leaves(Event):
        assert cls.kind == cls.__struct_config__.tag != ""


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_events_round_trip(event: object) -> None:
    assert decode_event(encode(event)) == event


def test_event_ids_are_stable_and_distinguish_attempts() -> None:
    a1 = TaskDispatched(run_id="r", at=1.0, task="a", attempt=1)
    a1_later = TaskDispatched(run_id="r", at=9.0, task="a", attempt=1)
    a2 = TaskDispatched(run_id="r", at=1.0, task="a", attempt=2)
    assert a1.id == a1_later.id == "r/a/0/1/task_dispatched"
    assert a1.id != a2.id


def test_newer_versions_and_garbage_are_refused() -> None:
    newer = msgspec.json.decode(encode(EVENTS[1]))
    newer["v"] = 99
    with pytest.raises(DecodeError, match="newer"):
        decode_event(msgspec.json.encode(newer))
    with pytest.raises(DecodeError):
        decode_event(b"not json")
    with pytest.raises(DecodeError):
        decode_event(b'{"type":"no_such_event","run_id":"r","at":1}')
    assert not DecodeError("x").retryable


def test_task_messages_round_trip() -> None:
    message = TaskReady(
        run_id="r",
        task="t",
        index=1,
        attempt=2,
        step=StepSpec(kind="command", argv=["echo"]),
        item={"a": 1},
    )
    assert decode_tasks(encode(message)) == [message]
    assert codec.to_builtins(message)["step"]["argv"] == ["echo"]


def test_several_tasks_travel_as_one_batch_message() -> None:
    tasks = [
        TaskReady(run_id="r", task="t", index=i, step=StepSpec(kind="python", target="m:f"))
        for i in range(3)
    ]
    assert b"task_batch" in encode_tasks(tasks)
    assert decode_tasks(encode_tasks(tasks)) == tasks
    assert b"task_batch" not in encode_tasks(tasks[:1])
    assert decode_tasks(encode_tasks(tasks[:1])) == tasks[:1]
    newer = msgspec.json.decode(encode_tasks(tasks))
    newer["tasks"][1]["v"] = 9
    with pytest.raises(DecodeError, match="newer"):
        decode_tasks(msgspec.json.encode(newer))


def test_several_events_travel_as_one_batch_message() -> None:
    sent = [e for e in EVENTS if not e.decided]  # what workers and clients send
    assert decode_coordinator_input(encode_events(sent)) == sent
    assert decode_coordinator_input(encode_events(sent[:1])) == sent[:1]
    beat = Heartbeat(worker="w", at=1.0, attempts=[])
    assert decode_coordinator_input(encode(beat)) == [beat]
    newer = msgspec.json.decode(encode_events(sent))
    newer["events"][2]["v"] = 9
    with pytest.raises(DecodeError, match="newer"):
        decode_coordinator_input(msgspec.json.encode(newer))
    with pytest.raises(DecodeError):
        decode_coordinator_input(b'{"type":"event_batch","events":[{"type":"nope"}]}')


@pytest.mark.parametrize(
    "event",
    [
        RunCompleted(run_id="r", at=1.0, state=RunStatus.SUCCEEDED),
        TaskSkipped(run_id="r", at=1.0, task="a", reason="forged"),
        TaskDispatched(run_id="r", at=1.0, task="a"),
    ],
    ids=lambda e: e.kind,
)
def test_the_coordinator_s_own_events_are_refused_from_the_wire(event: Event) -> None:
    with pytest.raises(DecodeError, match="the coordinator's own"):
        decode_coordinator_input(encode(event))
    with pytest.raises(DecodeError, match="the coordinator's own"):
        decode_coordinator_input(
            encode(EventBatch(events=[TaskStarted(run_id="r", at=1.0, task="a"), event]))
        )
    # What workers and clients send still passes.
    assert decode_coordinator_input(encode(TaskStarted(run_id="r", at=1.0, task="a")))
