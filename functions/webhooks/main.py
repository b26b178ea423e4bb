"""Cloud Function `webhooks`: signed notices to the URLs a key registered, on `job-finished`."""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from audiary.errors import BadEventError
from audiary.observability import telemetry
from audiary.services.notify import notify
from audiary.settings import load_settings
from audiary.wire.messages import cloud_event_data, parse_job_finished
from audiary.wiring import stores

log = logging.getLogger("audiary.functions.webhooks")
SERVICE = "webhooks"

telemetry.setup_in_workers(SERVICE)


@functions_framework.cloud_event
def webhooks(cloud_event: CloudEvent) -> None:
    """Notify the owner's webhooks of one finished job; malformed events are dropped."""
    settings = load_settings()
    with telemetry.cloud_event(SERVICE, cloud_event, settings,
                               topic=settings.topic_job_finished, span="webhooks"):
        try:
            finished = parse_job_finished(cloud_event_data(cloud_event.get_data()))
        except BadEventError as exc:
            log.error("dropping malformed event %s: %s", cloud_event["id"], exc)
            return
        outcome = notify(stores(settings), finished)
        log.info("webhooks: %d delivered, %d dead-lettered", outcome.delivered, outcome.failed,
                 extra={"job_id": finished.job_id})
