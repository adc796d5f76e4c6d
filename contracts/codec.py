"""The one wire and log codec: JSON via msgspec, tagged unions, versions checked."""

from __future__ import annotations

from typing import Any, cast

import msgspec

from contracts.errors import ConveyorError
from contracts.events import EVENT_VERSION, AnyEvent, Event, EventBatch
from contracts.messages import (
    MESSAGE_VERSION,
    CancelTasks,
    Heartbeat,
    ResumeRun,
    ShardWake,
    TaskBatch,
    TaskReady,
)

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)
_task_decoder = msgspec.json.Decoder(TaskReady | TaskBatch)
_control_decoder = msgspec.json.Decoder(CancelTasks)
_coordinator_decoder = msgspec.json.Decoder(
    AnyEvent | EventBatch | Heartbeat | ShardWake | ResumeRun
)

CoordinatorInput = Event | Heartbeat | ShardWake | ResumeRun


class DecodeError(ConveyorError):
    """Bytes that are not a message we understand (malformed, unknown, or nested too
    deeply to decode). Never retryable: park it, do not loop."""


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def encode_events(events: list[Event]) -> bytes:
    """One message for one or more events (a batch only when there are several)."""
    if len(events) == 1:
        return _encoder.encode(events[0])
    return _encoder.encode(EventBatch(events=cast("list[AnyEvent]", events)))


def encode_tasks(tasks: list[TaskReady]) -> bytes:
    """One message for one or more task messages (a batch only when there are several)."""
    return _encoder.encode(tasks[0] if len(tasks) == 1 else TaskBatch(tasks=tasks))


def _check_event_version(event: Event) -> Event:
    if event.v > EVENT_VERSION:
        raise DecodeError(f"event version {event.v} is newer than this engine ({EVENT_VERSION})")
    return event


def decode_event(data: bytes | str) -> Event:
    try:
        event: Event = _event_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise DecodeError(f"undecodable event: {exc}") from exc
    return _check_event_version(event)


def decode_coordinator_input(data: bytes) -> list[CoordinatorInput]:
    """What arrives on a coordinator shard queue: events (one or a batch), a heartbeat or
    a wake-up."""
    try:
        message: Any = _coordinator_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise DecodeError(f"undecodable coordinator message: {exc}") from exc
    if isinstance(message, EventBatch):
        if message.v > EVENT_VERSION:
            raise DecodeError(f"batch version {message.v} is newer than this engine")
        return [_from_the_wire(event) for event in message.events]
    if isinstance(message, Event):
        return [_from_the_wire(message)]
    if message.v > MESSAGE_VERSION:
        raise DecodeError(
            f"message version {message.v} is newer than this engine ({MESSAGE_VERSION})"
        )
    return [message]


def _from_the_wire(event: Event) -> Event:
    # What the coordinator decides (dispatches, skips, retries, completion) it records
    # itself: the same kinds arriving as messages are forgeries, never facts.
    if event.decided:
        raise DecodeError(
            f"{event.kind} events are the coordinator's own, not accepted from the wire"
        )
    return _check_event_version(event)


def decode_tasks(data: bytes) -> list[TaskReady]:
    """A task message or a batch of them."""
    try:
        message = _task_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise DecodeError(f"undecodable task message: {exc}") from exc
    if message.v > MESSAGE_VERSION:
        raise DecodeError(f"message version {message.v} is newer than this worker")
    tasks = message.tasks if isinstance(message, TaskBatch) else [message]
    for task in tasks:
        if task.v > MESSAGE_VERSION:
            raise DecodeError(f"message version {task.v} is newer than this worker")
    return tasks


def decode_control(data: bytes) -> CancelTasks:
    try:
        return _control_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise DecodeError(f"undecodable control message: {exc}") from exc


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
