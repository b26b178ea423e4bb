"""Spans this process finishes, for tests that look at traces."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from audiary.observability import telemetry
from audiary.settings import Settings


@contextmanager
def finished_spans(settings: Settings | None = None) -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes while open, added to the provider `telemetry.setup`
    made (with `settings`, the first time)."""
    telemetry.setup("tests", settings or Settings())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays, and passes the spans of later tests to nothing
