"""Cloud Function `learning`: datasets from the corrections stream, training from
`dataset-ready`, and the hourly catch-up (see audiary.services.learning).

- `POST /` with a Pub/Sub push envelope, from one of two push subscriptions: `datasets` (on
  `transcript-corrected`: a correction builds the next dataset) and `training` (on
  `dataset-ready`: starts `audiary train` as a Cloud Run job execution, or locally a process).
- `POST /schedule`: Cloud Scheduler (the native stack's timer locally) builds what is waiting
  and starts training on the newest ready dataset that has none yet.

Private: Cloud Run lets only the pusher account (push subscriptions, the scheduler) in.
"""

from __future__ import annotations

import logging

import flask
import functions_framework

from audiary import names
from audiary.errors import BadEventError
from audiary.observability import telemetry
from audiary.services.learning import on_correction, on_dataset_ready, on_schedule
from audiary.settings import load_settings
from audiary.wire import messages
from audiary.wiring import stores, training_launcher

log = logging.getLogger("audiary.functions.learning")
SERVICE = "learning"

telemetry.setup_in_workers(SERVICE)


@functions_framework.http
def learning(request: flask.Request) -> flask.typing.ResponseReturnValue:
    settings = load_settings()
    if request.method != "POST":
        return flask.jsonify(error={"code": "method_not_allowed",
                                    "message": "POST / (push) or /schedule"}), 405
    svc = stores(settings)
    if request.path.rstrip("/").endswith("/schedule"):
        outcomes = on_schedule(svc, training_launcher(settings))
        for outcome in outcomes:
            log.info("schedule: %s, %s", outcome.action, outcome.detail)
        return flask.jsonify(outcomes=[o.__dict__ for o in outcomes]), 200
    envelope = request.get_json(silent=True) or {}
    try:
        data, _, _ = messages.decode_push(envelope)
        subscription = str(envelope.get("subscription", "")).rsplit("/", 1)[-1]
        if subscription == names.SUBSCRIPTION_TRAINING:
            outcome = on_dataset_ready(svc, training_launcher(settings),
                                       messages.DatasetReady.model_validate_json(data))
        elif subscription == names.SUBSCRIPTION_DATASETS:
            outcome = on_correction(svc,
                                    messages.TranscriptCorrected.model_validate_json(data))
        else:
            raise BadEventError(f"no handler for subscription {subscription!r}")
    except (BadEventError, ValueError) as exc:
        # Acknowledged: a message that can never succeed is not retried.
        log.error("dropping a malformed push: %s", exc)
        return flask.jsonify(outcome="dropped", detail=str(exc)), 200
    log.info("%s: %s, %s", subscription, outcome.action, outcome.detail)
    return flask.jsonify(outcome=outcome.action, detail=outcome.detail,
                         dataset_version=outcome.dataset_version), 200
