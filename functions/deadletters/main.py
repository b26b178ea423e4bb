"""Cloud Function `deadletters`: a message Pub/Sub gave up on ends its job FAILED.

Fed by one push subscription per dead-letter topic (`deadletters-<subscription>`).
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from audiary.errors import BadEventError
from audiary.observability import telemetry
from audiary.observability.http import consuming_event
from audiary.services.deadletters import handle_dead_letter, source_subscription
from audiary.settings import load_settings
from audiary.wire.messages import decode_push
from audiary.wiring import stores

log = logging.getLogger("audiary.functions.deadletters")
SERVICE = "deadletters"

telemetry.setup_in_workers(SERVICE)


@functions_framework.cloud_event
def deadletters(cloud_event: CloudEvent) -> None:
    """Fail the job of one dead letter; a malformed one is logged and acknowledged."""
    settings = load_settings()
    envelope = cloud_event.get_data()
    consumer = envelope.get("subscription") if isinstance(envelope, dict) else None
    with consuming_event(SERVICE, cloud_event, settings, topic="dead-letters",
                         handler="deadletters"):
        try:
            data, attributes, _ = decode_push(envelope)
        except BadEventError as exc:
            log.error("dropping malformed dead letter %s: %s", cloud_event["id"], exc)
            return
        subscription = source_subscription(attributes, consumer)
        outcome = handle_dead_letter(stores(settings), subscription, data, attributes)
        log.info("dead letter from %s: %s", subscription, outcome.detail,
                 extra={"job_id": outcome.job_id})
