"""Webhooks: when a job finishes, POST a signed notice to each URL its owner registered.

`job-finished` fans out into one `webhook-delivery` message per hook (`fan_out`); each of
those delivers one notice (`deliver`), at most once per (job, hook, event).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind

from audiary import names
from audiary.domain.jobs import utcnow
from audiary.observability.logs import job_context
from audiary.observability.telemetry import tracer
from audiary.ports import DEAD_LETTERED, DeliveryResult, Publisher, Stores
from audiary.wire import messages

log = logging.getLogger(__name__)

WEBHOOK_DEAD_LETTER_TOPIC = names.dead_letter_topic(names.SUBSCRIPTION_WEBHOOKS)


@dataclass(frozen=True)
class NotifyOutcome:
    delivered: int
    failed: int


def fan_out(svc: Stores, finished: messages.JobFinished) -> int:
    """One `webhook-delivery` message per webhook of the job's owner; returns how many.

    Each hook is then delivered by a message of its own, so a slow or dead receiver delays no
    other and every delivery fits one ack deadline. A repeated `job-finished` publishes them
    again: the delivery records make those repeats no-ops.
    """
    with job_context(finished.job_id):
        job = svc.jobs.get_job(finished.job_id)
        if job is None or job.owner is None:
            return 0
        hooks = svc.keys.list_webhooks(job.owner)
        for hook in hooks:
            task = messages.WebhookDelivery(job_id=job.job_id, webhook_id=hook.webhook_id)
            svc.publisher.publish(
                svc.settings.topic_webhook_delivery, messages.encode(task),
                messages.attributes_for(job.job_id, webhook_id=hook.webhook_id))
        return len(hooks)


def delivery_id_for(task: messages.WebhookDelivery) -> str:
    """Stable per (job, webhook, event): receivers tell a repeat by it (`webhook-id`)."""
    return f"{task.job_id}-{task.webhook_id}-{task.event}"


def deliver(svc: Stores, task: messages.WebhookDelivery, *, message_id: str) -> NotifyOutcome:
    """POST the job's notice (DONE, FAILED or REJECTED) to one webhook, once.

    The delivery retries on its own (with backoff, honouring Retry-After), so this handler
    always acknowledges. The delivery that holds the (job, hook, event) lease sends it;
    `message_id` is the holder, so a duplicate message waits and a redelivery of the holder's
    own message after it died takes over. A delivery that gives up is recorded as
    dead-lettered and published on the webhooks dead-letter topic, with why.
    """
    with job_context(task.job_id):
        return _deliver(svc, task, message_id)


def _deliver(svc: Stores, task: messages.WebhookDelivery, message_id: str) -> NotifyOutcome:
    job = svc.jobs.get_job(task.job_id)
    hook = next((h for h in svc.keys.list_webhooks(job.owner) if h.webhook_id == task.webhook_id),
                None) if job is not None and job.owner is not None else None
    if job is None or hook is None:
        log.info("job or webhook %s gone; nothing to deliver", task.webhook_id)
        return NotifyOutcome(0, 0)
    delivery_id = delivery_id_for(task)
    if svc.keys.delivery_outcome(delivery_id) is not None or not svc.keys.claim_delivery(
            delivery_id, message_id, lease_s=svc.settings.webhook_lease_s, now=utcnow()):
        log.info("webhook %s already delivered or being delivered", delivery_id)
        return NotifyOutcome(0, 0)
    payload = {
        "event": task.event,
        "job_id": job.job_id,
        "status": job.status.value,
        "error": job.error.model_dump() if job.error else None,
        "duration_s": job.duration_s,
        "transcript": f"/v1/jobs/{job.job_id}/transcript",
        "notes": f"/v1/jobs/{job.job_id}/notes",
    }
    with tracer().start_as_current_span(
        "webhook", kind=SpanKind.CLIENT, attributes={"audiary.webhook_id": hook.webhook_id}
    ) as span:
        result = svc.webhooks.deliver(hook.url, payload, hook.secret.encode(),
                                      delivery_id=delivery_id)
        span.set_attributes({"audiary.delivered": result.delivered,
                             "audiary.attempts": result.attempts})
    if result.delivered:
        svc.keys.record_delivery(delivery_id, utcnow())
        return NotifyOutcome(1, 0)
    dead_letter(svc.publisher, WEBHOOK_DEAD_LETTER_TOPIC, hook.url, payload, result)
    svc.keys.record_delivery(delivery_id, utcnow(), DEAD_LETTERED)
    log.warning("webhook %s not delivered: %s", hook.webhook_id, result.last_error)
    return NotifyOutcome(0, 1)


def dead_letter(
    publisher: Publisher,
    topic: str,
    url: str,
    payload: Mapping[str, Any],
    result: DeliveryResult,
) -> str:
    """Publish an undelivered event with why it failed, for inspection or replay; the message id.

    The message body is JSON with `url`, `payload`, `reason`, `attempts`, `last_status` and
    `delivery_id`; `reason`, `attempts` and `delivery_id` are also attributes, for filtering.
    """
    if result.delivered:
        raise ValueError(f"webhook {result.delivery_id} was delivered; nothing to dead-letter")
    reason = result.last_error or "not delivered"
    data = {
        "url": url,
        "payload": dict(payload),
        "reason": reason,
        "attempts": result.attempts,
        "last_status": result.last_status,
        "delivery_id": result.delivery_id,
    }
    attributes = {
        # Pub/Sub caps attribute values at 1024 bytes; the full reason is in the body.
        "reason": reason[:256],
        "attempts": str(result.attempts),
        "delivery_id": result.delivery_id,
    }
    message_id = publisher.publish(topic, messages.canonical_json(data), attributes)
    log.info("webhook %s dead-lettered to %s (%s)", result.delivery_id, topic, reason)
    return message_id
