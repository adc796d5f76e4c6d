"""Trace identity of a run, the same in every process without asking anyone.

A run is one trace: its id is the run id (a 128-bit hex string), and its root span's
id derives from it, so a coordinator, a worker and a server each know where their
spans hang without passing more than the W3C ``traceparent`` header. A fan-out's items
get traces of their own, linked to the run's span (one giant trace helps nobody).
"""

from __future__ import annotations

import hashlib
import uuid
from contextvars import ContextVar

DISPATCHED_AT_HEADER = "x-conveyor-dispatched-at"

forced_ids: ContextVar[tuple[int, int] | None] = ContextVar("forced_ids", default=None)
"""(trace id, span id) the next span created must take (the run's own span)."""


def run_trace_id(run_id: str) -> str:
    return run_id if len(run_id) == 32 else uuid.uuid5(uuid.NAMESPACE_URL, run_id).hex


def run_span_id(run_id: str) -> str:
    return hashlib.sha256(f"conveyor-run:{run_id}".encode()).hexdigest()[:16]


def run_traceparent(run_id: str) -> str:
    return f"00-{run_trace_id(run_id)}-{run_span_id(run_id)}-01"


def parse_traceparent(value: str | None) -> tuple[int, int] | None:
    """(trace id, span id) of a W3C traceparent, or None if it is not one."""
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    return (trace_id, span_id) if trace_id and span_id else None
