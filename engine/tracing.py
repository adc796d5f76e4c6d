"""The run's span, emitted by its coordinator when the run ends, with the run's own
trace id and span id (``contracts.tracing``) and its real start and end times. Spans
go to whatever OpenTelemetry tracer provider the process configured; with none (the
default) this costs one check per finished run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from contracts.events import Event, RunCompleted
from contracts.tracing import forced_ids, run_span_id, run_trace_id
from contracts.vocabulary import RunStatus
from engine.state.model import RunState

_tracer = trace.get_tracer("conveyor.engine")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def run_span(event: Event, state: RunState) -> None:
    """A coordinator observer: the run's span once it has completed."""
    if not isinstance(event, RunCompleted):
        return
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # no tracing configured in this process
    token = forced_ids.set(
        (int(run_trace_id(state.run_id), 16), int(run_span_id(state.run_id), 16))
    )
    try:
        span = _tracer.start_span(
            f"run {state.workflow.name}",
            kind=SpanKind.INTERNAL,
            start_time=_ns(state.submitted_at),
            attributes={
                "conveyor.run_id": state.run_id,
                "conveyor.workflow": state.workflow.name,
                "conveyor.state": str(event.state),
                "conveyor.tasks": len(state.nodes),
            },
        )
    finally:
        forced_ids.reset(token)
    if event.state != RunStatus.SUCCEEDED:
        span.set_status(Status(StatusCode.ERROR, event.reason))
    span.end(end_time=_ns(event.at))


@contextlib.contextmanager
def arrival_span(name: str, run_id: str, attributes: dict[str, Any]) -> Iterator[None]:
    """A span for handling something that arrived for a trigger, in the trace of the run
    it starts (whose id is known before the run exists)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        yield
        return
    parent = SpanContext(
        trace_id=int(run_trace_id(run_id), 16),
        span_id=int(run_span_id(run_id), 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    with _tracer.start_as_current_span(name, context=context, attributes=attributes):
        yield
