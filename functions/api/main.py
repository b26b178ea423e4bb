"""Cloud Function `api`: the HTTPS API (see src/audiary/api)."""

from __future__ import annotations

import functools

import flask
import functions_framework

from audiary.entrypoints.api.app import create_app
from audiary.observability import telemetry

SERVICE = "api"


@functools.cache
def _app() -> flask.Flask:
    telemetry.setup(SERVICE)
    return create_app()


@functions_framework.http
def api(request: flask.Request) -> flask.typing.ResponseReturnValue:
    """Route the request through the API app (created once per instance); `/metrics` too."""
    app = _app()
    with app.request_context(request.environ):
        return app.full_dispatch_request()
