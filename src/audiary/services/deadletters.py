"""Dead letters end jobs: a message Pub/Sub gave up on marks its job FAILED, and says so.

Every push subscription of the pipeline dead-letters a message after `max_delivery_attempts`
deliveries that were not acknowledged: the handler raised each time, or its process died, or
it ran past the ack deadline. The handlers themselves end a job on their last delivery when
they can (see services.ingest, services.transcription, services.summarize); this is for the
deliveries that never got that far. The letter's job becomes FAILED with the stage, an error
code and what was tried, which announces it (`job-finished`, so webhooks are told). A job that
already ended stays as it is, so a letter that arrives late, or twice, changes nothing.

Webhook dead letters (a `job-finished` no handler took, or a delivery that gave up) belong to
jobs that already ended: they are logged and counted, and stay on the pull subscription. So do
the learning function's (a dataset build or a training start that kept failing): they change
no job, and its hourly schedule does the work again.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from audiary import names
from audiary.errors import BadEventError
from audiary.observability.logs import job_context
from audiary.ports import Stores
from audiary.services.ingest import event_job_id
from audiary.services.progress import fail
from audiary.wire.storage_events import parse_pubsub_notification

__all__ = ["DeadLetterOutcome", "handle_dead_letter", "source_subscription"]

log = logging.getLogger(__name__)

SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
SOURCE_DELIVERIES = "CloudPubSubDeadLetterSourceDeliveryCount"

# Which stage a subscription's handler is, and the error code its jobs fail with.
STAGES: Mapping[str, tuple[str, str]] = {
    names.SUBSCRIPTION_INGEST: ("ingest", "ingest_failed"),
    names.SUBSCRIPTION_TRANSCRIBER: ("transcribe", "transcription_failed"),
    names.SUBSCRIPTION_SUMMARIZE: ("summarize", "summarize_failed"),
}


@dataclass(frozen=True)
class DeadLetterOutcome:
    job_id: str | None
    detail: str
    failed: bool = False


def source_subscription(attributes: Mapping[str, str], consumer: str | None) -> str | None:
    """The subscription a letter was dead-lettered from: Pub/Sub's attribute, else the name
    of the consumer subscription it came through (`deadletters-<subscription>`)."""
    source = attributes.get(SOURCE_SUBSCRIPTION) or ""
    if not source and consumer:
        source = consumer.rsplit("/", 1)[-1].removeprefix(f"{names.DEADLETTERS}-")
    return source.rsplit("/", 1)[-1] or None


def handle_dead_letter(svc: Stores, subscription: str | None, data: bytes,
                       attributes: Mapping[str, str]) -> DeadLetterOutcome:
    """End the job of one dead letter from `subscription`. Safe to repeat."""
    deliveries = attributes.get(SOURCE_DELIVERIES, "?")
    if subscription in (names.SUBSCRIPTION_WEBHOOKS, names.SUBSCRIPTION_WEBHOOK_DELIVERY):
        log.warning("webhook dead letter (%s): %s", attributes.get("reason", "not handled"),
                    attributes.get("delivery_id") or attributes.get("job_id", "?"))
        return DeadLetterOutcome(attributes.get("job_id"), "webhook letter kept for inspection")
    if subscription in (names.SUBSCRIPTION_DATASETS, names.SUBSCRIPTION_TRAINING):
        # The learning loop's letters change no job: the schedule builds and trains later.
        log.warning("learning dead letter from %s (%s deliveries): dataset %s, job %s",
                    subscription, deliveries, attributes.get("dataset_version", "-"),
                    attributes.get("job_id", "-"))
        return DeadLetterOutcome(attributes.get("job_id"),
                                 "learning letter kept for inspection; the schedule catches up")
    if subscription is None or subscription not in STAGES:
        log.error("dead letter from unknown subscription %r dropped", subscription)
        return DeadLetterOutcome(None, f"unknown subscription {subscription!r}")
    stage, code = STAGES[subscription]
    job_id = attributes.get("job_id") or _upload_job_id(svc, attributes, data)
    if job_id is None:
        return DeadLetterOutcome(None, "no job named by the letter; dropped")
    with job_context(job_id):
        job = svc.jobs.get_job(job_id)
        if job is None:
            return DeadLetterOutcome(job_id, "no such job (deleted?); dropped")
        what = f"chunk {attributes['chunk']}" if "chunk" in attributes else "its message"
        message = (f"gave up on {what} after {deliveries} deliveries to {subscription} that "
                   f"were never acknowledged (the job was {job.status})")
        if not fail(svc, job_id, code, message, stage):
            return DeadLetterOutcome(job_id, f"job already {job.status}; nothing to do")
        log.error("job FAILED by a dead letter: %s", message, extra={"job_id": job_id})
        return DeadLetterOutcome(job_id, "job FAILED", failed=True)


def _upload_job_id(svc: Stores, attributes: Mapping[str, str], data: bytes) -> str | None:
    """The job of a dead-lettered GCS notification (it carries no job id of its own)."""
    try:
        event = parse_pubsub_notification(
            {"attributes": dict(attributes), "data": base64.b64encode(data).decode()})
    except BadEventError as exc:
        log.error("dead-lettered upload notification unreadable: %s", exc)
        return None
    return event_job_id(svc, event) if event is not None else None
