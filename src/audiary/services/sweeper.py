"""The sweeper: a job that has made no progress for too long is re-driven once, then FAILED.

Pub/Sub and the dead-letter path end every job whose messages fail. What they cannot see is a
message that is gone: never published (a process died between its write and its publish), or
acknowledged by a delivery that then lost its work. Such a job would wait for ever, so a
schedule (Cloud Scheduler on Google Cloud, a timer in the native stack) calls `sweep`:

- a job whose `progress_at` (its last transition or chunk result) is older than
  `AUDIARY_STALL_AFTER_S` gets the messages its state is waiting for published again, once:
  RECEIVED the upload notification, QUEUED / TRANSCRIBING the chunks not yet done (or the last
  chunk, which finishes the fan-in), TRANSCRIBED / SUMMARIZING `transcript-ready`;
- a job that made no progress for as long again after that re-drive is FAILED (`stalled`, with
  what was tried), which announces it.

Every stage takes a repeated message as a no-op, so a re-drive that races a slow but healthy
stage does no harm. The stall time must exceed the longest silence of a healthy job: Pub/Sub's
redelivery backoff (up to 10 minutes between tries) and the summarize lease.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from audiary.domain.jobs import ChunkStatus, Job, JobStatus, utcnow
from audiary.domain.layout import canonical_key
from audiary.observability import metrics
from audiary.observability.logs import job_context
from audiary.ports import Stores
from audiary.services.ingest import publish_chunks
from audiary.services.progress import fail
from audiary.services.transcription import announce
from audiary.wire.storage_events import ObjectEvent, notification_message

__all__ = ["SweepOutcome", "sweep"]

log = logging.getLogger(__name__)

# The stage a job waits on in each state: the one a stall FAILS it as.
WAITING_ON = {
    JobStatus.RECEIVED: "ingest",
    JobStatus.QUEUED: "transcribe",
    JobStatus.TRANSCRIBING: "transcribe",
    JobStatus.TRANSCRIBED: "summarize",
    JobStatus.SUMMARIZING: "summarize",
}


@dataclass
class SweepOutcome:
    redriven: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    looked_at: int = 0


def sweep(svc: Stores, now: datetime | None = None) -> SweepOutcome:
    """Re-drive or fail every job stalled at `now` (up to `AUDIARY_SWEEP_BATCH` of them, the
    longest stalled first). Safe to run twice, or in two places at once."""
    s = svc.settings
    now = now or utcnow()
    outcome = SweepOutcome()
    stalled = svc.jobs.list_stalled(now - timedelta(seconds=s.stall_after_s), s.sweep_batch)
    for job in stalled:
        outcome.looked_at += 1
        with job_context(job.job_id):
            if job.redriven_at is None or (job.progress_at and job.redriven_at < job.progress_at):
                what = redrive(svc, job)
                svc.jobs.update_job(job.job_id, {"redriven_at": now, "progress_at": now})
                metrics.JOBS_SWEPT.labels("redriven").inc()
                log.warning("job %s stalled in %s; re-drove %s", job.job_id, job.status, what,
                            extra={"job_id": job.job_id})
                outcome.redriven.append(job.job_id)
                continue
            stage = WAITING_ON.get(job.status, "sweeper")
            message = (f"no progress in {job.status} for {s.stall_after_s:.0f} s, and none "
                       f"for {s.stall_after_s:.0f} s after its messages were re-sent at "
                       f"{job.redriven_at:%Y-%m-%dT%H:%M:%SZ}")
            if fail(svc, job.job_id, "stalled", message, stage):
                metrics.JOBS_SWEPT.labels("failed").inc()
                log.error("job FAILED by the sweeper: %s", message, extra={"job_id": job.job_id})
                outcome.failed.append(job.job_id)
    return outcome


def redrive(svc: Stores, job: Job) -> str:
    """Publish again what `job`'s state waits for; says what."""
    s = svc.settings
    if job.status is JobStatus.RECEIVED:
        src = job.source
        data, attributes = notification_message(ObjectEvent(
            src.bucket, src.name, src.generation, src.size, src.content_type))
        svc.publisher.publish(s.topic_audio_uploaded, data, attributes)
        return "the upload notification"
    if job.status in (JobStatus.QUEUED, JobStatus.TRANSCRIBING):
        chunks = svc.jobs.get_chunks(job.job_id)
        missing = [c for c in chunks if c.status is not ChunkStatus.DONE] or chunks[-1:]
        publish_chunks(svc, job.job_id, missing, canonical_key(job.job_id))
        return f"{len(missing)} of {len(chunks)} chunk messages"
    announce(svc, job.job_id)
    return "transcript-ready"
