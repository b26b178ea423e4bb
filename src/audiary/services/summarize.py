"""Summarize: a stored transcript becomes a diary note; the job ends DONE (or FAILED)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from audiary.domain.jobs import TERMINAL, Job, JobStatus, utcnow
from audiary.domain.notes import NoteRecord
from audiary.domain.transcript import Transcript
from audiary.observability.logs import job_context
from audiary.ports import Stores
from audiary.services.cleanup import DELETED, purge_if_deleted
from audiary.services.notes.router import AllProvidersFailedError, NoteRouter
from audiary.services.progress import advance, fail, resume_announcement
from audiary.services.review import queue_finished
from audiary.wire import messages

log = logging.getLogger(__name__)

STAGE = "summarize"
# Object metadata an uploader may set to say when the audio was recorded (`audiary drop` does).
RECORDED_AT_KEYS = ("recorded-at", "recorded_at", "date")


@dataclass(frozen=True)
class SummarizeOutcome:
    detail: str
    record: NoteRecord | None = None


def _summarize_again(svc: Stores, router: NoteRouter, ready: messages.TranscriptReady,
                     message_id: str) -> SummarizeOutcome:
    """A new note version from a corrected transcript of a DONE job; the job stays DONE and
    nothing is announced. One model call per transcript version (a lease, as for the first
    note); an unchanged transcript is a cache hit and costs nothing."""
    job_id, version = ready.job_id, ready.transcript_version
    old = svc.notes.get_note(job_id)
    if old is not None and old.transcript_version >= version:
        return SummarizeOutcome(f"the note is already from transcript version "
                                f"{old.transcript_version}; nothing to do")
    if not svc.jobs.claim(job_id, f"{STAGE}-v{version}", message_id,
                          lease_s=svc.settings.summarize_lease_s, now=utcnow()):
        return SummarizeOutcome("another delivery is writing this note version; nothing to do")
    transcript = Transcript.model_validate_json(
        svc.blobs.get(ready.transcript_bucket, ready.transcript_key))
    record = router.write(job_id, transcript, recorded_at=recorded_at(svc, job_id))
    history = [*old.history, old.model_copy(update={"history": []})] if old else []
    record = record.model_copy(update={
        "version": len(history) + 1, "transcript_version": version, "history": history,
        "created_at": utcnow()})
    svc.notes.put_note(record)
    if purge_if_deleted(svc, job_id):  # deleted meanwhile: after the put, as above
        return SummarizeOutcome(DELETED)
    log.info("note version %d from transcript version %d by %s", record.version, version,
             record.provider, extra={"job_id": job_id})
    return SummarizeOutcome(f"note version {record.version} by {record.provider}", record)


def recorded_at(svc: Stores, job_id: str) -> datetime | None:
    """When the audio was recorded: upload metadata if it says, else when it was received."""
    job = svc.jobs.get_job(job_id)
    if job is None:
        return None
    info = svc.blobs.stat(job.source.bucket, job.source.name)
    for key in RECORDED_AT_KEYS:
        value = info.metadata.get(key) if info else None
        if value:
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                log.warning("ignoring unreadable %s metadata %r", key, value,
                            extra={"job_id": job_id})
    return job.timestamps.get(JobStatus.RECEIVED.value)


def summarize(svc: Stores, router: NoteRouter, ready: messages.TranscriptReady, *,
              message_id: str) -> SummarizeOutcome:
    """Write the job's note once. Raises when it should be retried (within the attempt limit).

    Only the delivery that holds the job's summarize lease calls a model: `message_id` (the
    same on every redelivery of one message) is the holder, so a duplicate `transcript-ready`
    arriving while the note is written is acknowledged and does nothing, and a redelivery of
    the holder's own message after it died takes over. A lease outlives a dead holder by at most
    `AUDIARY_SUMMARIZE_LEASE_S`.
    """
    with job_context(ready.job_id):
        return _summarize(svc, router, ready, message_id)


def _summarize(svc: Stores, router: NoteRouter, ready: messages.TranscriptReady,
               message_id: str) -> SummarizeOutcome:
    s = svc.settings
    job_id = ready.job_id
    extra = {"job_id": job_id}
    job = svc.jobs.get_job(job_id)
    if job is None:
        if purge_if_deleted(svc, job_id):  # and a note written by a delivery in flight
            return SummarizeOutcome(DELETED)
        return SummarizeOutcome(f"no job {job_id}; dropping the message")
    if job.status is JobStatus.DONE and ready.transcript_version > 1:
        return _summarize_again(svc, router, ready, message_id)
    if job.status in TERMINAL:
        if resume_announcement(svc, job, STAGE):
            return SummarizeOutcome(f"job is {job.status}; job-finished announced again")
        return SummarizeOutcome(f"job is {job.status}; nothing to do")
    if not svc.jobs.claim(job_id, STAGE, message_id, lease_s=s.summarize_lease_s, now=utcnow()):
        return SummarizeOutcome("another delivery is writing this note; nothing to do")
    if job.summarize_attempts >= s.max_attempts:
        fail(svc, job_id, "summarize_failed",
             f"no diary note after {job.summarize_attempts} attempts", STAGE)
        return SummarizeOutcome("retries exhausted; job FAILED")
    svc.jobs.update_job(job_id, {"summarize_attempts": job.summarize_attempts + 1})
    advance(svc, job_id, JobStatus.SUMMARIZING)

    transcript = Transcript.model_validate_json(
        svc.blobs.get(ready.transcript_bucket, ready.transcript_key)
    )
    try:
        record = router.write(job_id, transcript, recorded_at=recorded_at(svc, job_id))
    except AllProvidersFailedError as exc:
        if job.summarize_attempts + 1 >= s.max_attempts:
            fail(svc, job_id, "summarize_failed", str(exc), STAGE)
            log.error("job FAILED: %s", exc, extra=extra)
            return SummarizeOutcome("every provider failed; job FAILED")
        raise

    svc.notes.put_note(record)
    # Deleted while the note was written: the delete may have purged before this put, so look
    # again after it, rather than leave the note to a redelivery that may never come.
    if purge_if_deleted(svc, job_id):
        return SummarizeOutcome(DELETED)
    _queue_for_review(svc, job, transcript)
    hours = (job.duration_s or 0) / 3600
    advance(svc, job_id, JobStatus.DONE, stage=STAGE, fields={
        "note_provider": record.provider,
        "cost_usd": record.cost_usd,
        "cost_per_audio_hour_usd": record.cost_usd / hours if hours else None,
    })
    log.info("note written by %s (%s), %d+%d tokens, $%.5f", record.provider, record.model,
             record.input_tokens, record.output_tokens, record.cost_usd, extra=extra)
    return SummarizeOutcome(f"note by {record.provider}", record)


def _queue_for_review(svc: Stores, job: Job, transcript: Transcript) -> None:
    """Uncertain spans and the audit draw go to the review queue; a failure there is logged
    and does not hold the note back (a flag can still queue the job later)."""
    try:
        queue_finished(svc, job, transcript)
    except Exception:
        log.exception("could not queue job %s for review", job.job_id,
                      extra={"job_id": job.job_id})
