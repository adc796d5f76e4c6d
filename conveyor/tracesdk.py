"""Conveyor's parts of OpenTelemetry's SDK, loaded once tracing is on
(``conveyor.telemetry``): the id generator that gives a run's own span the ids its run
id names, and an exporter that appends spans to a file."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator

from contracts.tracing import forced_ids


class RunIds(IdGenerator):
    """Random ids, except for a span whose ids are forced (a run's own span)."""

    def generate_span_id(self) -> int:
        forced = forced_ids.get()
        return forced[1] if forced else random.getrandbits(64)

    def generate_trace_id(self) -> int:
        forced = forced_ids.get()
        return forced[0] if forced else random.getrandbits(128)


class JsonLinesExporter(SpanExporter):
    """Each span as one JSON line: name, ids, parent, links, times, attributes, status."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.get_span_context()
            assert context is not None
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": f"{context.trace_id:032x}",
                        "span_id": f"{context.span_id:016x}",
                        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                        "links": [
                            {
                                "trace_id": f"{ln.context.trace_id:032x}",
                                "span_id": f"{ln.context.span_id:016x}",
                            }
                            for ln in span.links
                        ],
                        "start": span.start_time,
                        "end": span.end_time,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                        "service": span.resource.attributes.get("service.name"),
                    },
                    default=str,
                )
            )
        with self._lock, open(self._path, "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None
