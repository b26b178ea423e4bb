"""Metrics, traces and log correlation, set up the same way in every Audiary process.

- `setup(service)`, once per process and cheap to call again: JSON logs with the trace fields,
  an OpenTelemetry tracer provider with the configured exporter (`otel_exporter`), and, with
  `metrics_port`, a Prometheus server for a process that cannot add a `/metrics` route (the
  CloudEvent functions, the watcher).
- `setup_in_workers(service)`: the same in every process forked from this one, so a gunicorn
  worker serves its metrics before its first event.
- `consuming(...)` (and `http.consuming_event(...)` around it): one delivered message, handled as a
  CONSUMER span `process <topic>` (OpenTelemetry's messaging conventions, see `messaging`)
  that is a child of the PRODUCER span `send <topic>` which published it (W3C
  `traceparent`/`tracestate` in the message attributes), with its queue lag and the job id for
  logs.

Spans are recorded even with the exporter `none`: their ids still correlate log lines and
travel in messages, so turning an exporter on later needs no other change. With the exporter
`gcp` (Cloud Trace) the resource also says where the process runs (Cloud Run service or
function, revision, region: Google's resource detector), and an incoming request's
`X-Cloud-Trace-Context` is read besides `traceparent`, so a request through Google's front end
continues the trace the front end started. Every trace is recorded, also under a front end that
did not sample its own span: the pipeline is low-volume and its traces are what tell a job's
story.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from audiary.domain.jobs import utcnow
from audiary.errors import ConfigError
from audiary.observability import metrics
from audiary.observability.logs import job_context, setup_logging
from audiary.observability.messaging import (
    PROCESS,
    PUSHED,
    Delivery,
    consumer_attributes,
    span_name,
)

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from audiary.ports import Transcriber
    from audiary.settings import Settings

__all__ = [
    "consuming",
    "inference",
    "propagator",
    "serve_metrics",
    "setup",
    "setup_in_workers",
    "span_exporter",
    "tracer",
    "tracer_provider",
]

log = logging.getLogger(__name__)

TRACER_NAME = "audiary"

_lock = threading.Lock()
_ready_pid: int | None = None
_fork_hooks: set[str] = set()


def tracer() -> trace.Tracer:
    """The tracer of Audiary's own spans."""
    return trace.get_tracer(TRACER_NAME)


def setup(service: str, settings: Settings | None = None) -> None:
    """JSON logs, the tracer provider and (with `metrics_port`) the metrics server, once per
    process; later calls return at once. Marks `service` up."""
    global _ready_pid
    if _ready_pid == os.getpid():
        return
    with _lock:
        if _ready_pid == os.getpid():
            return
        if settings is None:
            from audiary.settings import load_settings

            settings = load_settings()
        setup_logging(project=settings.project_id)
        _install_tracing(service, settings)
        if settings.metrics_port is not None:
            try:
                serve_metrics(settings.metrics_port, settings.metrics_host)
            except OSError:
                # Metrics are worth a loud log line, not a failed event.
                log.exception("cannot serve metrics on %s:%d", settings.metrics_host,
                              settings.metrics_port)
        metrics.SERVICE_UP.labels(service).set(1)
        _ready_pid = os.getpid()


def setup_in_workers(service: str) -> None:
    """Run `setup(service)` in every process forked from this one.

    functions-framework imports a function in the gunicorn master and serves it from a forked
    worker; a metrics server started in the master would report the master's idle registry,
    and one started on the first event leaves the target down until then. Registering costs
    nothing, so entry points call this at import.
    """
    if service in _fork_hooks:
        return
    _fork_hooks.add(service)
    os.register_at_fork(after_in_child=lambda: _setup_in_child(service))


def _setup_in_child(service: str) -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork
    try:
        setup(service)
    except Exception:
        log.exception("observability setup failed in a forked worker; the first event retries")


def serve_metrics(port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve this process's Prometheus registry at `http://host:port/metrics` from a daemon
    thread; returns the server (`shutdown()` stops it)."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=host)
    log.info("serving metrics on http://%s:%d/metrics", host, port)
    return server


def _install_tracing(service: str, settings: Settings) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # installed before in this interpreter (a forked worker inherits it)
    provider = tracer_provider(service, settings)
    propagate.set_global_textmap(propagator(settings))
    trace.set_tracer_provider(provider)


def tracer_provider(service: str, settings: Settings) -> TracerProvider:
    """A tracer provider for `service` that exports to `otel_exporter` (not installed)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    resource = Resource.create({SERVICE_NAME: f"audiary-{service}"})
    if settings.otel_exporter == "gcp":
        resource = _google_cloud_resource(resource)
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))
    exporter = span_exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _google_cloud_resource(resource: Resource) -> Resource:
    """`resource` plus what Google's detector finds: the Cloud Run service or function, its
    revision, instance and region, and the project (nothing off Google Cloud)."""
    from opentelemetry.sdk.resources import get_aggregated_resources

    detector = _optional("opentelemetry.resourcedetector.gcp_resource_detector",
                         "opentelemetry-resourcedetector-gcp")
    return get_aggregated_resources([detector.GoogleCloudResourceDetector()],
                                    initial_resource=resource)


def propagator(settings: Settings) -> TextMapPropagator:
    """How trace context is read from requests and messages and written into them: W3C trace
    context and baggage; with Cloud Trace also `X-Cloud-Trace-Context`, which Google's front
    end sets (read first, so a `traceparent` that is also there wins)."""
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagators: list[TextMapPropagator] = [TraceContextTextMapPropagator(),
                                            W3CBaggagePropagator()]
    if settings.otel_exporter == "gcp":
        cloud = _optional("opentelemetry.propagators.cloud_trace_propagator",
                          "opentelemetry-propagator-gcp")
        propagators.insert(0, cloud.CloudTraceFormatPropagator())
    return CompositePropagator(propagators)


def _optional(module: str, package: str) -> Any:
    """A module of the `gcp` extra, imported by name: it ships no type information."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"AUDIARY_OTEL_EXPORTER=gcp needs the package {package} (the gcp extra); "
            "install it, or send OTLP to a collector with AUDIARY_OTEL_EXPORTER=otlp"
        ) from exc


def span_exporter(settings: Settings) -> SpanExporter | None:
    """The exporter `otel_exporter` names; None for `none`."""
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint
        return OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)
    if settings.otel_exporter == "gcp":
        cloud_trace = _optional("opentelemetry.exporter.cloud_trace",
                                "opentelemetry-exporter-gcp-trace")
        exporter: SpanExporter = cloud_trace.CloudTraceSpanExporter(project_id=settings.project_id)
        return exporter
    return None


@contextmanager
def consuming(
    service: str,
    handler: str,
    attributes: Mapping[str, str],
    *,
    topic: str,
    published_at: datetime | None,
    delivery: Delivery | None = None,
) -> Iterator[Span]:
    """Handle one message of `topic` in a CONSUMER span `process <topic>`.

    Its queue lag is observed, the span continues the trace in its attributes (a new trace
    when they carry none) and its `job_id` tags the log lines. `handler` (`audiary.handler`)
    says what handles it. What `delivery` lacks (message id, subscription, delivery attempt,
    body size) comes from the push being handled (`messaging.PUSHED`, which
    `http.instrument_flask` sets for a push endpoint).
    """
    if published_at is not None:
        lag = (utcnow() - published_at).total_seconds()
        metrics.QUEUE_LAG_SECONDS.labels(topic, service).observe(max(lag, 0.0))
    parent = propagate.extract(attributes)
    found = (delivery or Delivery()).merged(PUSHED.get() or Delivery())
    span_attributes: dict[str, AttributeValue] = {
        **consumer_attributes(topic, attributes, found), "audiary.handler": handler}
    with tracer().start_as_current_span(
        span_name(PROCESS, topic), context=parent, kind=SpanKind.CONSUMER,
        attributes=span_attributes,
    ) as current, job_context(attributes.get("job_id")):
        yield current


@contextmanager
def inference(model: Transcriber, audio_s: float) -> Iterator[Span]:
    """Time one speech recognition call; when it succeeds, count it toward the real-time
    factor (inference seconds over audio seconds, by model and device)."""
    device = str(getattr(model, "device", "unknown"))
    with tracer().start_as_current_span("inference", attributes={
        "audiary.model": model.model_name, "audiary.device": device,
        "audiary.audio_seconds": audio_s,
    }) as span:
        started = time.perf_counter()
        yield span
        metrics.INFERENCE_SECONDS.labels(model.model_name, device).inc(
            time.perf_counter() - started)
        metrics.AUDIO_SECONDS.labels(model.model_name, device).inc(audio_s)
