"""Tracing for a Conveyor process: OpenTelemetry's SDK, off unless asked for.

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set: spans are exported
  over OTLP/HTTP (the ``opentelemetry-exporter-otlp`` package: ``pip install
  'conveyor[otel]'``), configured by the standard ``OTEL_*`` variables.
- ``CONVEYOR_TRACE_FILE`` set: spans are appended to that file as JSON lines (for a
  look without a collector, and for the tests).
- ``OTEL_SDK_DISABLED=true``, or neither: no tracing, at no cost.

Span ids come from an id generator that gives a run's own span the ids its run id
names (``contracts.tracing``), so every process agrees on it.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Sequence

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator

from contracts.tracing import forced_ids

log = structlog.get_logger("conveyor.telemetry")


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


def configure(service: str) -> TracerProvider | None:
    """Set up this process's tracer provider as the environment says; None if off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    trace_file = os.environ.get("CONVEYOR_TRACE_FILE")
    if not endpoint and not trace_file:
        return None
    name = os.environ.get("OTEL_SERVICE_NAME", f"conveyor-{service}")
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}), id_generator=RunIds()
    )
    if trace_file:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(trace_file)))
    if endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.error(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed:"
                " pip install 'conveyor[otel]'"
            )
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
