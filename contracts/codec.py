"""The one wire and log codec: JSON via msgspec, tagged unions, versions checked."""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.errors import ConveyorError
from contracts.events import EVENT_VERSION, AnyEvent, Event
from contracts.messages import MESSAGE_VERSION, CancelTasks, Heartbeat, ShardWake, TaskReady

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)
_task_decoder = msgspec.json.Decoder(TaskReady)
_control_decoder = msgspec.json.Decoder(CancelTasks)
_coordinator_decoder = msgspec.json.Decoder(AnyEvent | Heartbeat | ShardWake)

CoordinatorInput = Event | Heartbeat | ShardWake


class DecodeError(ConveyorError):
    """Bytes that are not a message we understand. Never retryable: park it, do not loop."""


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_event(data: bytes | str) -> Event:
    try:
        event: Event = _event_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"undecodable event: {exc}") from exc
    if event.v > EVENT_VERSION:
        raise DecodeError(f"event version {event.v} is newer than this engine ({EVENT_VERSION})")
    return event


def decode_coordinator_input(data: bytes) -> CoordinatorInput:
    """What arrives on a coordinator shard queue: an event, a heartbeat or a wake-up."""
    try:
        message: CoordinatorInput = _coordinator_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"undecodable coordinator message: {exc}") from exc
    limit = EVENT_VERSION if isinstance(message, Event) else MESSAGE_VERSION
    if message.v > limit:
        raise DecodeError(f"message version {message.v} is newer than this engine ({limit})")
    return message


def decode_task(data: bytes) -> TaskReady:
    try:
        message = _task_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"undecodable task message: {exc}") from exc
    if message.v > MESSAGE_VERSION:
        raise DecodeError(f"message version {message.v} is newer than this worker")
    return message


def decode_control(data: bytes) -> CancelTasks:
    try:
        return _control_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"undecodable control message: {exc}") from exc


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
