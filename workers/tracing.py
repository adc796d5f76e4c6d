"""A span per task attempt, with its wait in the queue and its execution as children.

A plain task's attempt hangs under its run's span (the ``traceparent`` the task message
carries); an item of a fan-out gets a trace of its own with a link to the run's span,
so a run of 100,000 items is not one trace of 300,000 spans.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from contracts.tracing import parse_traceparent
from workers.executors.base import StepOutcome
from workers.executors.call import Proceed, StepCall

_tracer = trace.get_tracer("conveyor.worker")

attempt_trace: ContextVar[tuple[str | None, float | None]] = ContextVar(
    "attempt_trace", default=(None, None)
)
"""The traceparent and dispatch time of the attempt this context runs."""


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


async def trace_spans(call: StepCall, proceed: Proceed) -> StepOutcome:
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return await proceed(call)  # no tracing configured in this process
    traceparent, dispatched_at = attempt_trace.get()
    parent_ids = parse_traceparent(traceparent)
    if parent_ids is None:
        return await proceed(call)
    task = call.task
    run_context = SpanContext(
        trace_id=parent_ids[0],
        span_id=parent_ids[1],
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    attributes: dict[str, Any] = {
        "conveyor.run_id": task.run_id,
        "conveyor.task": task.task,
        "conveyor.index": task.index,
        "conveyor.attempt": task.attempt,
        "conveyor.kind": task.step.kind,
    }
    started = time.time()
    opened = dispatched_at if dispatched_at is not None and dispatched_at <= started else started
    if task.item is not None:  # an item of a fan-out: its own trace, linked to the run
        context = None
        links = [Link(run_context)]
    else:
        context = trace.set_span_in_context(NonRecordingSpan(run_context))
        links = []
    name = (
        f"{task.task}[{task.index}]#{task.attempt}"
        if task.item is not None
        else f"{task.task}#{task.attempt}"
    )
    span = _tracer.start_span(
        name, context=context, links=links, start_time=_ns(opened), attributes=attributes
    )
    inside = trace.set_span_in_context(span)
    _tracer.start_span("queue wait", context=inside, start_time=_ns(opened)).end(
        end_time=_ns(started)
    )
    execution = _tracer.start_span("execute", context=inside, start_time=_ns(started))
    try:
        outcome = await proceed(call)
    except BaseException:
        execution.end()
        span.set_status(Status(StatusCode.ERROR, "interrupted"))
        span.end()
        raise
    execution.end()
    if not outcome.ok:
        span.set_status(Status(StatusCode.ERROR, outcome.error[:200]))
    span.set_attribute("conveyor.outcome", "succeeded" if outcome.ok else str(outcome.reason))
    span.end()
    return outcome
