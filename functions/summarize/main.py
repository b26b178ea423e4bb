"""Cloud Function `summarize`: a stored transcript becomes a diary note (job DONE).

Triggered by the `transcript-ready` topic (Eventarc Pub/Sub trigger, or a push subscription
in the native local stack).
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from audiary.errors import BadEventError
from audiary.observability import telemetry
from audiary.observability.http import consuming_event
from audiary.services.summarize import summarize as run_summarize
from audiary.settings import load_settings
from audiary.wire.messages import cloud_event_data, parse_transcript_ready
from audiary.wiring import note_router, stores

log = logging.getLogger("audiary.functions.summarize")
SERVICE = "summarize"

telemetry.setup_in_workers(SERVICE)


@functions_framework.cloud_event
def summarize(cloud_event: CloudEvent) -> None:
    """Write the note for one transcript-ready message.

    A malformed message is logged and acknowledged; when every provider fails the error
    propagates so Pub/Sub retries, until the job's attempt limit ends it FAILED.
    """
    settings = load_settings()
    with consuming_event(SERVICE, cloud_event, settings,
                         topic=settings.topic_transcript_ready, handler="summarize"):
        try:
            ready = parse_transcript_ready(cloud_event_data(cloud_event.get_data()))
        except BadEventError as exc:
            log.error("dropping malformed event %s: %s", cloud_event["id"], exc)
            return
        outcome = run_summarize(stores(settings), note_router(settings), ready,
                                message_id=str(cloud_event["id"]))
        log.info("summarize: %s", outcome.detail, extra={"job_id": ready.job_id})
