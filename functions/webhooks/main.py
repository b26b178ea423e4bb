"""Cloud Function `webhooks`: signed notices to the URLs a key registered.

Two push subscriptions feed it: `webhooks` (on `job-finished`) fans each finished job out
into one `webhook-delivery` message per hook, and `webhook-delivery` delivers one of those.
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from audiary.errors import BadEventError
from audiary.observability import telemetry
from audiary.observability.http import consuming_event
from audiary.services.notify import deliver, fan_out
from audiary.settings import load_settings
from audiary.wire.messages import decode_push, parse_job_finished, parse_webhook_delivery
from audiary.wiring import stores

log = logging.getLogger("audiary.functions.webhooks")
SERVICE = "webhooks"

telemetry.setup_in_workers(SERVICE)


@functions_framework.cloud_event
def webhooks(cloud_event: CloudEvent) -> None:
    """Fan out one finished job, or deliver one hook; malformed events are dropped."""
    settings = load_settings()
    try:
        data, attributes, message_id = decode_push(cloud_event.get_data())
    except BadEventError as exc:
        log.error("dropping malformed event %s: %s", cloud_event["id"], exc)
        return
    one_hook = "webhook_id" in attributes
    with consuming_event(
        SERVICE, cloud_event, settings, handler="webhook delivery" if one_hook else "webhooks",
        topic=settings.topic_webhook_delivery if one_hook else settings.topic_job_finished,
    ):
        try:
            if one_hook:
                task = parse_webhook_delivery(data)
            else:
                finished = parse_job_finished(data)
        except BadEventError as exc:
            log.error("dropping malformed event %s: %s", cloud_event["id"], exc)
            return
        svc = stores(settings)
        if one_hook:
            outcome = deliver(svc, task, message_id=message_id or cloud_event["id"])
            log.info("webhook %s: %d delivered, %d dead-lettered", task.webhook_id,
                     outcome.delivered, outcome.failed, extra={"job_id": task.job_id})
        else:
            count = fan_out(svc, finished)
            log.info("job %s finished: %d webhook deliveries queued", finished.job_id, count,
                     extra={"job_id": finished.job_id})
