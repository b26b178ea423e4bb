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
- `instrument_flask(app, service)`: `GET /metrics`, requests by route and status, server spans.

Spans are recorded even with the exporter `none`: their ids still correlate log lines and
travel in messages, so turning an exporter on later needs no other change.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from audiary import metrics
from audiary.domain.jobs import utcnow
from audiary.errors import ConfigError
from audiary.logs import JOB_ID, job_context, setup_logging
from audiary.messages import parse_time

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from flask import Flask
    from opentelemetry.sdk.trace.export import SpanExporter

    from audiary.ports import Transcriber
    from audiary.settings import Settings

__all__ = [
    "cloud_event",
    "consuming",
    "inference",
    "instrument_flask",
    "serve_metrics",
    "setup",
    "setup_in_workers",
    "span_exporter",
    "tracer",
]

log = logging.getLogger(__name__)

TRACER_NAME = "audiary"
UNMATCHED_ROUTE = "unmatched"

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


def instrument_flask(app: Flask, service: str, *, untraced: Collection[str] = ()) -> None:
    """Give `app` a `GET /metrics` route, count its requests by route, method and status, and
    trace each request as a server span that continues a `traceparent` header.

    `untraced` names endpoints that get no span: health checks, and Pub/Sub push endpoints,
    whose trace comes from the message rather than the request (see `consuming`). Each request
    also scopes `JOB_ID`: its `job_id` path parameter, or what the view binds.
    """
    from flask import Response, g, request
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    skip = {"metrics", "static", *untraced}

    @app.get("/metrics", endpoint="metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)

    def route() -> str:
        return request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE

    @app.before_request
    def start() -> None:
        g.audiary_started = time.perf_counter()
        job_id = (request.view_args or {}).get("job_id")
        g.audiary_job_token = JOB_ID.set(job_id if isinstance(job_id, str) else None)
        if request.endpoint is None or request.endpoint in skip:
            return
        span = tracer().start_span(
            f"{request.method} {route()}",
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route()},
        )
        g.audiary_span = span
        g.audiary_context_token = context.attach(trace.set_span_in_context(span))
        if isinstance(job_id, str):
            span.set_attribute("audiary.job_id", job_id)

    @app.after_request
    def count(response: Response) -> Response:
        if request.endpoint != "metrics":
            started: float = g.get("audiary_started", time.perf_counter())
            metrics.REQUESTS.labels(
                service, route(), request.method, str(response.status_code)).inc()
            metrics.REQUEST_SECONDS.labels(service, route()).observe(
                time.perf_counter() - started)
        span: Span | None = g.get("audiary_span")
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(StatusCode.ERROR)
        return response

    @app.teardown_request
    def end(exc: BaseException | None) -> None:
        span: Span | None = g.pop("audiary_span", None)
        if span is not None:
            if exc is not None:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR)
            span.end()
            context.detach(g.pop("audiary_context_token"))
        token = g.pop("audiary_job_token", None)
        if token is not None:
            JOB_ID.reset(token)
