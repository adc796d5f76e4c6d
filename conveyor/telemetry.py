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

import os
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger("conveyor.telemetry")


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
    # The SDK is loaded only now: most processes trace nothing and are spared it.
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from conveyor.tracesdk import JsonLinesExporter, RunIds

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
