"""Cloud Function `ingest`: a new upload in the inbox becomes a queued job.

Triggered by the Eventarc storage event or by the GCS notification on the
`audio-uploaded` topic; both shapes are accepted.
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from audiary.errors import BadEventError
from audiary.observability import telemetry
from audiary.observability.http import consuming_event
from audiary.services.ingest import ingest as run_ingest
from audiary.settings import load_settings
from audiary.wire.storage_events import parse_storage_event
from audiary.wiring import stores

log = logging.getLogger("audiary.functions.ingest")
SERVICE = "ingest"

telemetry.setup_in_workers(SERVICE)


@functions_framework.cloud_event
def ingest(cloud_event: CloudEvent) -> None:
    """Handle one storage event.

    A malformed event is logged and acknowledged (returning normally): redelivering it could
    never succeed. Any other error propagates, so the platform retries within its policy.
    """
    settings = load_settings()
    with consuming_event(SERVICE, cloud_event, settings,
                         topic=settings.topic_audio_uploaded, handler="ingest"):
        try:
            event = parse_storage_event(cloud_event["type"], cloud_event.get_data())
        except BadEventError as exc:
            log.error("dropping malformed event %s: %s", cloud_event["id"], exc)
            return
        if event is not None:
            outcome = run_ingest(stores(settings), event)
            log.info("ingest: %s", outcome.detail, extra={"job_id": outcome.job_id})
