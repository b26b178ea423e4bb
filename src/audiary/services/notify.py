"""Webhooks: when a job finishes, POST a signed notice to each URL its owner registered."""

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
from audiary.ports import DeliveryResult, Publisher, Stores
from audiary.wire import messages

log = logging.getLogger(__name__)

WEBHOOK_DEAD_LETTER_TOPIC = names.dead_letter_topic(names.SUBSCRIPTION_WEBHOOKS)


@dataclass(frozen=True)
class NotifyOutcome:
    delivered: int
    failed: int


def notify(svc: Stores, finished: messages.JobFinished) -> NotifyOutcome:
    """Deliver the job's notice (DONE, FAILED or REJECTED) to its owner's webhooks, each once;
    undeliverable ones are dead-lettered.

    Each delivery retries on its own (with backoff, honouring Retry-After), so this handler
    always acknowledges; a repeated `job-finished` skips the hooks that already got it.
    """
    with job_context(finished.job_id):
        return _notify(svc, finished)


def _notify(svc: Stores, finished: messages.JobFinished) -> NotifyOutcome:
    job = svc.jobs.get_job(finished.job_id)
    if job is None or job.owner is None:
        return NotifyOutcome(0, 0)
    payload = {
        "event": "job.finished",
        "job_id": job.job_id,
        "status": job.status.value,
        "error": job.error.model_dump() if job.error else None,
        "duration_s": job.duration_s,
        "transcript": f"/v1/jobs/{job.job_id}/transcript",
        "notes": f"/v1/jobs/{job.job_id}/notes",
    }
    delivered = failed = 0
    for hook in svc.keys.list_webhooks(job.owner):
        # Stable per (job, hook, event): receivers can tell a repeat by it, and a delivery
        # that already reached its receiver is not made again.
        delivery_id = f"{job.job_id}-{hook.webhook_id}"
        if svc.keys.was_delivered(delivery_id):
            log.info("webhook %s already delivered", delivery_id, extra={"job_id": job.job_id})
            continue
        with tracer().start_as_current_span(
            "webhook", kind=SpanKind.CLIENT, attributes={"audiary.webhook_id": hook.webhook_id}
        ) as span:
            result = svc.webhooks.deliver(hook.url, payload, hook.secret.encode(),
                                          delivery_id=delivery_id)
            span.set_attributes({"audiary.delivered": result.delivered,
                                 "audiary.attempts": result.attempts})
        if result.delivered:
            svc.keys.record_delivery(delivery_id, utcnow())
            delivered += 1
            continue
        failed += 1
        dead_letter(svc.publisher, WEBHOOK_DEAD_LETTER_TOPIC, hook.url, payload, result)
        log.warning("webhook %s not delivered: %s", hook.webhook_id, result.last_error,
                    extra={"job_id": job.job_id})
    return NotifyOutcome(delivered, failed)


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
