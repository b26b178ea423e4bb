"""Cloud Function `sweeper`: re-drive, then fail, jobs that made no progress for too long.

Cloud Scheduler POSTs to it on a schedule (every 10 minutes; the native stack's
`audiary.local.scheduler` does the same locally). See audiary.services.sweeper.
"""

from __future__ import annotations

import logging

import flask
import functions_framework

from audiary.observability import telemetry
from audiary.services.sweeper import sweep
from audiary.settings import load_settings
from audiary.wiring import stores

log = logging.getLogger("audiary.functions.sweeper")
SERVICE = "sweeper"

telemetry.setup_in_workers(SERVICE)


@functions_framework.http
def sweeper(request: flask.Request) -> flask.typing.ResponseReturnValue:
    """One sweep per POST; answers what it did as JSON."""
    if request.method != "POST":
        return flask.jsonify(error="method_not_allowed", message="POST runs a sweep"), 405
    outcome = sweep(stores(load_settings()))
    log.info("sweep: %d stalled, %d re-driven, %d failed", outcome.looked_at,
             len(outcome.redriven), len(outcome.failed))
    return flask.jsonify(looked_at=outcome.looked_at, redriven=outcome.redriven,
                         failed=outcome.failed), 200
