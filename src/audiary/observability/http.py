"""Flask services: `GET /metrics`, requests by route and status, a server span per request."""

from __future__ import annotations

import time
from collections.abc import Collection

from flask import Flask, Response, g, request
from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from audiary.observability import metrics
from audiary.observability.logs import JOB_ID
from audiary.observability.telemetry import tracer

__all__ = ["UNMATCHED_ROUTE", "instrument_flask"]

UNMATCHED_ROUTE = "unmatched"


def instrument_flask(app: Flask, service: str, *, untraced: Collection[str] = ()) -> None:
    """Give `app` a `GET /metrics` route, count its requests by route, method and status, and
    trace each request as a server span that continues a `traceparent` header.

    `untraced` names endpoints that get no span: health checks, and Pub/Sub push endpoints,
    whose trace comes from the message rather than the request (see `consuming`). Each request
    also scopes `JOB_ID`: its `job_id` path parameter, or what the view binds.
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
