"""Metrics, traces and log correlation, set up the same way in every Audiary process.

- `setup(service)`, once per process and cheap to call again: JSON logs with the trace fields,
  an OpenTelemetry tracer provider with the configured exporter (`otel_exporter`), and, with
  `metrics_port`, a Prometheus server for a process that cannot add a `/metrics` route (the
  CloudEvent functions, the watcher).
- `setup_in_workers(service)`: the same in every process forked from this one, so a gunicorn
  worker serves its metrics before its first event.
- `cloud_event(...)` and `consuming(...)`: one delivered message, handled as a span of the trace
  its publisher started (W3C `traceparent`/`tracestate` in the message attributes, put there by
  `messages.attributes_for`), with its queue lag, the request count and the job id for logs.

Spans are recorded even with the exporter `none`: their ids still correlate log lines and
travel in messages, so turning an exporter on later needs no other change.
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
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from audiary.domain.jobs import utcnow
from audiary.errors import ConfigError
from audiary.observability import metrics
from audiary.observability.logs import job_context, setup_logging
from audiary.wire.messages import parse_time

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.trace.export import SpanExporter

    from audiary.ports import Transcriber
    from audiary.settings import Settings

__all__ = [
    "cloud_event",
    "consuming",
    "inference",
    "serve_metrics",
    "setup",
    "setup_in_workers",
    "span_exporter",
    "tracer",
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
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # installed before in this interpreter (a forked worker inherits it)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"audiary-{service}"}))
    exporter = span_exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def span_exporter(settings: Settings) -> SpanExporter | None:
    """The exporter `otel_exporter` names; None for `none`."""
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint
        return OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)
    if settings.otel_exporter == "gcp":
        try:
            # Imported by name: the package is optional and ships no type information.
            cloud_trace = importlib.import_module("opentelemetry.exporter.cloud_trace")
        except ImportError as exc:
            raise ConfigError(
                "AUDIARY_OTEL_EXPORTER=gcp needs the package opentelemetry-exporter-gcp-trace; "
                "install it, or send OTLP to a collector with AUDIARY_OTEL_EXPORTER=otlp"
            ) from exc
        exporter: SpanExporter = cloud_trace.CloudTraceSpanExporter(project_id=settings.project_id)
        return exporter
    return None


class CloudEventLike(Protocol):
    """What is read of a `cloudevents.http.CloudEvent`."""

    def get_data(self) -> Any: ...

    def get(self, key: str, default: Any = None) -> Any: ...


@contextmanager
def cloud_event(
    service: str, event: CloudEventLike, settings: Settings, *, topic: str, span: str
) -> Iterator[Span]:
    """One call of a CloudEvent function: set up, then handle the event's Pub/Sub message as
    span `span` of its publisher's trace, counted as a request (200, or 500 when it raises)."""
    setup(service, settings)
    data = event.get_data()
    message = data.get("message") if isinstance(data, Mapping) else None
    message = message if isinstance(message, Mapping) else {}
    raw = message.get("attributes")
    attributes = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    # A Pub/Sub push converted by functions-framework has the publish time in both places;
    # an Eventarc storage event only has `time` (when the object was finalized).
    published = parse_time(message.get("publishTime")) or parse_time(event.get("time"))
    started = time.perf_counter()
    status = "500"
    try:
        with consuming(service, span, attributes, topic=topic, published_at=published) as current:
            yield current
        status = "200"
    finally:
        metrics.REQUESTS.labels(service, "/", "POST", status).inc()
        metrics.REQUEST_SECONDS.labels(service, "/").observe(time.perf_counter() - started)


@contextmanager
def consuming(
    service: str,
    span: str,
    attributes: Mapping[str, str],
    *,
    topic: str,
    published_at: datetime | None,
) -> Iterator[Span]:
    """Handle one message: its queue lag is observed, the span continues the trace in its
    attributes (a new trace when they carry none) and its `job_id` tags the log lines."""
    if published_at is not None:
        lag = (utcnow() - published_at).total_seconds()
        metrics.QUEUE_LAG_SECONDS.labels(topic, service).observe(max(lag, 0.0))
    parent = propagate.extract(attributes)
    with tracer().start_as_current_span(
        span,
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "gcp_pubsub", "messaging.destination.name": topic},
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
