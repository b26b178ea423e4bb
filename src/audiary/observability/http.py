"""Flask services: `GET /metrics`, requests by route and status, a server span per request;
and `consuming_event`, one Pub/Sub message handed to a functions-framework CloudEvent function."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response, g, has_request_context, request
from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from audiary.observability import metrics
from audiary.observability.logs import JOB_ID
from audiary.observability.messaging import PUSHED, Delivery
from audiary.observability.telemetry import consuming, setup, tracer
from audiary.wire.messages import parse_time

if TYPE_CHECKING:
    from audiary.settings import Settings

__all__ = ["UNMATCHED_ROUTE", "consuming_event", "instrument_flask"]

UNMATCHED_ROUTE = "unmatched"


def instrument_flask(app: Flask, service: str, *, untraced: Collection[str] = ()) -> None:
    """Give `app` a `GET /metrics` route, count its requests by route, method and status, and
    trace each request as a server span that continues a `traceparent` header.

    `untraced` names endpoints that get no span: health checks, and Pub/Sub push endpoints,
    whose trace comes from the message rather than the request (see `consuming`); what the
    push envelope of such a request says (message id, subscription, delivery attempt) is
    `messaging.PUSHED` while it is handled. Each request also scopes `JOB_ID`: its `job_id`
    path parameter, or what the view binds.
    """
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
        if request.endpoint in untraced and request.method == "POST" and request.is_json:
            g.audiary_push_token = PUSHED.set(_envelope())
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
        push = g.pop("audiary_push_token", None)
        if push is not None:
            PUSHED.reset(push)


def _envelope() -> Delivery:
    """What the push envelope of the Flask request being handled says (nothing outside one)."""
    if not has_request_context():
        return Delivery()
    return Delivery.of_envelope(request.get_json(silent=True))


class CloudEventLike(Protocol):
    """What is read of a `cloudevents.http.CloudEvent`."""

    def get_data(self) -> Any: ...

    def get(self, key: str, default: Any = None) -> Any: ...


@contextmanager
def consuming_event(
    service: str, event: CloudEventLike, settings: Settings, *, topic: str, handler: str
) -> Iterator[Span]:
    """One call of a CloudEvent function: set up, then handle the event's Pub/Sub message in
    the consumer span of its publisher's trace (`handler` names what handles it), counted as a
    request (200, or 500 when it raises).

    functions-framework turns a push into a CloudEvent without the subscription and the
    delivery attempt; they are read from the push request itself.
    """
    setup(service, settings)
    data = event.get_data()
    message = data.get("message") if isinstance(data, Mapping) else None
    message = message if isinstance(message, Mapping) else {}
    raw = message.get("attributes")
    attributes = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    # A Pub/Sub push converted by functions-framework has the publish time in both places;
    # an Eventarc storage event only has `time` (when the object was finalized).
    published = parse_time(message.get("publishTime")) or parse_time(event.get("time"))
    event_id = event.get("id")
    delivery = Delivery.of_envelope(data).merged(_envelope()).merged(
        Delivery(message_id=event_id if isinstance(event_id, str) else None))
    started = time.perf_counter()
    status = "500"
    try:
        with consuming(service, handler, attributes, topic=topic, published_at=published,
                       delivery=delivery) as current:
            yield current
        status = "200"
    finally:
        metrics.REQUESTS.labels(service, "/", "POST", status).inc()
        metrics.REQUEST_SECONDS.labels(service, "/").observe(time.perf_counter() - started)
