"""Cloud Function `summarize`: a stored transcript becomes a diary note (job DONE).

Triggered by the `transcript-ready` topic (Eventarc Pub/Sub trigger, or a push subscription
in the native local stack).
"""

from __future__ import annotations

import base64
import binascii
import logging

import functions_framework
from cloudevents.http import CloudEvent

from audiary.errors import BadEventError
from audiary.logs import setup_logging
from audiary.messages import parse_transcript_ready
from audiary.services.summarize import summarize as run_summarize
from audiary.settings import load_settings
from audiary.wiring import note_router, services

log = logging.getLogger("audiary.functions.summarize")


@functions_framework.cloud_event
def summarize(cloud_event: CloudEvent) -> None:
    """Write the note for one transcript-ready message.

    A malformed message is logged and acknowledged; when every provider fails the error
    propagates so Pub/Sub retries, until the job's attempt limit ends it FAILED.
    """
    setup_logging()
    try:
        message = (cloud_event.get_data() or {}).get("message") or {}
        ready = parse_transcript_ready(base64.b64decode(message.get("data", ""), validate=True))
    except (BadEventError, binascii.Error, AttributeError) as exc:
        log.error("dropping malformed event %s: %s", cloud_event["id"], exc)
        return
    settings = load_settings()
    outcome = run_summarize(services(settings), note_router(settings), ready)
    log.info("summarize: %s", outcome.detail, extra={"job_id": ready.job_id})
