"""Webhooks: when a job finishes, POST a signed notice to each URL its owner registered."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry.trace import SpanKind

from audiary import messages, names
from audiary.errors import UnsafeUrlError
from audiary.fetch import check_url
from audiary.logs import job_context
from audiary.observability import tracer
from audiary.webhooks import DeliveryResult, dead_letter, deliver
from audiary.wiring import Services

log = logging.getLogger(__name__)

WEBHOOK_DEAD_LETTER_TOPIC = names.dead_letter_topic(names.SUBSCRIPTION_WEBHOOKS)


@dataclass(frozen=True)
class NotifyOutcome:
    delivered: int
    failed: int


def notify(svc: Services, finished: messages.JobFinished) -> NotifyOutcome:
    """Deliver the job's notice to its owner's webhooks; undeliverable ones are dead-lettered.

    Each delivery retries on its own (with backoff, honouring Retry-After), so this handler
    always acknowledges: a Pub/Sub redelivery would only repeat the successful deliveries.
    """
    with job_context(finished.job_id):
        return _notify(svc, finished)


def _notify(svc: Services, finished: messages.JobFinished) -> NotifyOutcome:
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
    s = svc.settings
    results: list[DeliveryResult] = []
    for hook in svc.keys.list_webhooks(job.owner):
        delivery_id = f"{job.job_id}-{hook.webhook_id}"
        with tracer().start_as_current_span(
            "webhook", kind=SpanKind.CLIENT, attributes={"audiary.webhook_id": hook.webhook_id}
        ) as span:
            try:
                # Checked at registration too; a name may point somewhere private since then.
                check_url(hook.url, allow_http=s.allow_http_urls,
                          allow_private=s.allow_private_urls)
            except UnsafeUrlError as exc:
                result = DeliveryResult(delivered=False, attempts=0, last_status=None,
                                        last_error=str(exc), delivery_id=delivery_id)
            else:
                result = deliver(hook.url, payload, hook.secret.encode(),
                                 attempts=s.webhook_attempts, delivery_id=delivery_id)
            span.set_attributes({"audiary.delivered": result.delivered,
                                 "audiary.attempts": result.attempts})
        results.append(result)
        if not result.delivered:
            dead_letter(svc.publisher, WEBHOOK_DEAD_LETTER_TOPIC, hook.url, payload, result)
            log.warning("webhook %s not delivered: %s", hook.webhook_id, result.last_error,
                        extra={"job_id": job.job_id})
    delivered = sum(r.delivered for r in results)
    return NotifyOutcome(delivered, len(results) - delivered)
