"""Messages between pipeline stages, and Pub/Sub push envelopes."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry import propagate
from pydantic import BaseModel, ValidationError

from audiary.errors import BadEventError


class ChunkTask(BaseModel):
    """Published on `transcribe-chunk`: one chunk of one job."""

    job_id: str
    index: int
    start_sample: int
    end_sample: int
    audio_bucket: str
    audio_key: str


class TranscriptReady(BaseModel):
    """Published on `transcript-ready` when a job's transcript is stored."""

    job_id: str
    transcript_bucket: str
    transcript_key: str
    # Above 1: a corrected version, sent by POST /v1/jobs/{id}/notes to write the note again.
    transcript_version: int = 1


class TranscriptCorrected(BaseModel):
    """Published on `transcript-corrected` when a correction made a transcript version."""

    job_id: str
    transcript_version: int
    segments: list[int]  # the corrected segments' indexes
    source: str  # api, ui, label-studio


class DatasetReady(BaseModel):
    """Published on `dataset-ready` when a dataset's train split passes the threshold."""

    version: int
    bucket: str
    manifests: dict[str, str]  # split -> key of its JSONL manifest
    train_hours: float


class JobFinished(BaseModel):
    """Published on `job-finished` when a job reaches an end state (DONE, FAILED, REJECTED)."""

    job_id: str
    status: str


class WebhookDelivery(BaseModel):
    """Published on `webhook-delivery`: tell one webhook about one event of one job."""

    job_id: str
    webhook_id: str
    event: str = "job.finished"


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: bytes, what: str) -> M:
    try:
        return model.model_validate(json.loads(data))
    except (ValueError, ValidationError) as exc:
        raise BadEventError(f"message is not {what}: {exc}") from exc


def parse_chunk_task(data: bytes) -> ChunkTask:
    """The chunk task in a message body; `BadEventError` when it is not one."""
    return _parse(ChunkTask, data, "a chunk task")


def parse_transcript_ready(data: bytes) -> TranscriptReady:
    """The transcript-ready event in a message body; `BadEventError` when it is not one."""
    return _parse(TranscriptReady, data, "a transcript-ready event")


def parse_dataset_ready(data: bytes) -> DatasetReady:
    """The dataset-ready event in a message body; `BadEventError` when it is not one."""
    return _parse(DatasetReady, data, "a dataset-ready event")


def parse_job_finished(data: bytes) -> JobFinished:
    """The job-finished event in a message body; `BadEventError` when it is not one."""
    return _parse(JobFinished, data, "a job-finished event")


def parse_webhook_delivery(data: bytes) -> WebhookDelivery:
    """The webhook delivery in a message body; `BadEventError` when it is not one."""
    return _parse(WebhookDelivery, data, "a webhook delivery")


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON with sorted keys: the same payload always gives the same bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def attributes_for(job_id: str, **extra: str) -> dict[str, str]:
    """Message attributes: the job id travels as correlation id on every hop, and the W3C
    trace context of the active span (`traceparent`, `tracestate`) so that the handler of the
    message continues the same trace."""
    return inject_trace({"job_id": job_id, "correlation_id": job_id, **extra})


def inject_trace(attributes: dict[str, str]) -> dict[str, str]:
    """Add the active span's trace context to message attributes (none outside a span)."""
    propagate.inject(attributes)
    return attributes


def publish_time(body: Any) -> datetime | None:
    """When Pub/Sub accepted the message of a push envelope (`publishTime`), if it says."""
    message = body.get("message") if isinstance(body, Mapping) else None
    value = message.get("publishTime") if isinstance(message, Mapping) else None
    return parse_time(value)


def delivery_attempt(body: Any) -> int | None:
    """Which delivery of its message a push envelope is (`deliveryAttempt`, 1 for the first).

    Pub/Sub sends it on subscriptions with a dead-letter policy (its emulator does not); it
    counts every delivery, also those that never reached the handler (a restarting service).
    """
    value = body.get("deliveryAttempt") if isinstance(body, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time as Pub/Sub and CloudEvents write it; None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # nanoseconds are cut to microseconds
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def decode_push(body: Any) -> tuple[bytes, dict[str, str], str]:
    """Check a Pub/Sub push envelope; returns (data, attributes, message id).

    Raises `BadEventError` for anything that is not a push envelope, so the caller can
    answer 400 and Pub/Sub does not retry a message that can never succeed.
    """
    if not isinstance(body, Mapping):
        raise BadEventError("request body is not a JSON object")
    message = body.get("message")
    if not isinstance(message, Mapping):
        raise BadEventError("push envelope has no 'message' object")
    raw = message.get("data", "")
    if not isinstance(raw, str):
        raise BadEventError("push message 'data' is not a base64 string")
    try:
        data = base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise BadEventError("push message 'data' is not valid base64") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise BadEventError("push message 'attributes' is not an object")
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    return data, {str(k): str(v) for k, v in attributes.items()}, message_id


def cloud_event_data(event_data: Any) -> bytes:
    """The message body of a Pub/Sub CloudEvent, whose data is a push envelope."""
    return decode_push(event_data)[0]
