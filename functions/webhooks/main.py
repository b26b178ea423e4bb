"""Cloud Function `webhooks`: signed notices to the URLs a key registered, on `job-finished`."""

from __future__ import annotations

import base64
import binascii
import json
import logging

import functions_framework
from cloudevents.http import CloudEvent
from pydantic import ValidationError

from audiary import observability
from audiary.messages import JobFinished
from audiary.services.notify import notify
from audiary.settings import load_settings
from audiary.wiring import services

log = logging.getLogger("audiary.functions.webhooks")
SERVICE = "webhooks"

observability.setup_in_workers(SERVICE)


@functions_framework.cloud_event
def webhooks(cloud_event: CloudEvent) -> None:
    """Notify the owner's webhooks of one finished job; malformed events are dropped."""
    settings = load_settings()
    with observability.cloud_event(SERVICE, cloud_event, settings,
                                   topic=settings.topic_job_finished, span="webhooks"):
        try:
            message = (cloud_event.get_data() or {}).get("message") or {}
            finished = JobFinished.model_validate(
                json.loads(base64.b64decode(message.get("data", ""), validate=True)))
        except (binascii.Error, ValueError, ValidationError, AttributeError) as exc:
            log.error("dropping malformed event %s: %s", cloud_event["id"], exc)
            return
        outcome = notify(services(settings), finished)
        log.info("webhooks: %d delivered, %d dead-lettered", outcome.delivered, outcome.failed,
                 extra={"job_id": finished.job_id})
