"""Ingest: one new upload becomes a job, a canonical WAV, a chunk plan and chunk messages."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace

from audiary.domain.audio import SAMPLE_RATE
from audiary.domain.chunking import chunk_length_s, plan_chunks, realtime_factor
from audiary.domain.jobs import (
    TERMINAL,
    Chunk,
    Job,
    JobError,
    JobStatus,
    SourceObject,
    job_id_for,
    new_job,
    utcnow,
)
from audiary.domain.layout import canonical_key, quarantine_key
from audiary.errors import RejectedInputError
from audiary.observability.logs import job_context
from audiary.observability.telemetry import tracer
from audiary.ports import Stores
from audiary.services.cleanup import DELETED, purge_if_deleted
from audiary.services.decode import AudioLimits, decode_to_canonical
from audiary.services.progress import (
    advance,
    fail,
    fail_on_last_attempt,
    resume_announcement,
)
from audiary.settings import Settings
from audiary.wire import messages
from audiary.wire.storage_events import ObjectEvent

log = logging.getLogger(__name__)

STAGE = "ingest"


@dataclass(frozen=True)
class IngestOutcome:
    job_id: str | None
    status: JobStatus | None
    detail: str


def ingest(svc: Stores, event: ObjectEvent) -> IngestOutcome:
    """Handle one finalized object. Safe to call again with the same event."""
    s = svc.settings
    if event.bucket != s.uploads_bucket or not event.name.startswith(s.inbox_prefix):
        return IngestOutcome(None, None, f"ignored {event.bucket}/{event.name}: not in the inbox")
    if event.name.endswith("/"):
        return IngestOutcome(None, None, f"ignored folder placeholder {event.name}")

    job_id = event_job_id(svc, event)
    with job_context(job_id):
        return _ingest_job(svc, event, job_id)


def _ingest_job(svc: Stores, event: ObjectEvent, job_id: str) -> IngestOutcome:
    s = svc.settings
    if purge_if_deleted(svc, job_id):
        return IngestOutcome(job_id, None, DELETED)
    job, created = svc.jobs.create_job(new_job(
        job_id,
        SourceObject(bucket=event.bucket, name=event.name, generation=event.generation,
                     size=event.size, content_type=event.content_type),
        received_at=utcnow(),
    ))
    extra = {"job_id": job_id}
    if job.status in TERMINAL:
        if resume_announcement(svc, job, STAGE):
            return IngestOutcome(job_id, job.status, "job-finished announced again")
        return IngestOutcome(job_id, job.status, "duplicate delivery")
    if job.status is not JobStatus.RECEIVED:
        if not job.chunks_published:
            # An earlier delivery died while fanning out, maybe after some chunks already
            # moved the job on: send every chunk message again (the transcriber counts each
            # chunk once, so the ones that went out before do no harm).
            log.info("finishing an interrupted fan-out", extra=extra)
            publish_chunks(svc, job_id, svc.jobs.get_chunks(job_id), canonical_key(job_id))
            return IngestOutcome(job_id, job.status, "fan-out finished")
        log.info("job already %s; nothing to do", job.status, extra=extra)
        return IngestOutcome(job_id, job.status, "duplicate delivery")
    if not created:
        log.info("resuming ingest of a job left in RECEIVED", extra=extra)
    attempt = job.ingest_attempts + 1
    if attempt > s.max_attempts:
        fail(svc, job_id, "ingest_failed", f"ingest failed {job.ingest_attempts} times", STAGE)
        return IngestOutcome(job_id, JobStatus.FAILED, "retries exhausted")
    svc.jobs.update_job(job_id, {"ingest_attempts": attempt})

    try:
        chunks_total = _prepare(svc, job)
    except RejectedInputError as exc:
        _reject(svc, job, exc)
        return IngestOutcome(job_id, JobStatus.REJECTED, exc.code)
    except Exception as exc:
        if purge_if_deleted(svc, job_id):  # deleted while we worked
            return IngestOutcome(job_id, None, DELETED)
        if not fail_on_last_attempt(svc, job_id, attempt, exc, code="ingest_failed",
                                    what="ingest", stage=STAGE):
            raise  # Pub/Sub delivers again
        return IngestOutcome(job_id, JobStatus.FAILED, "retries exhausted")
    return IngestOutcome(job_id, JobStatus.QUEUED, f"{chunks_total} chunks queued")


def event_job_id(svc: Stores, event: ObjectEvent) -> str:
    """The job an upload event belongs to: the API's job for its object, else one named by
    the object and its generation (so a repeated event names the same job)."""
    return _api_job_id(svc, event) or job_id_for(event.bucket, event.name, event.generation)


def _api_job_id(svc: Stores, event: ObjectEvent) -> str | None:
    """The id of the job the API created for this upload (`inbox/api/<owner>/<job_id>/...`).

    Honoured only when that job exists and names exactly this object, so a name alone cannot
    attach an upload to someone else's job.
    """
    parts = event.name.removeprefix(svc.settings.inbox_prefix).split("/")
    if len(parts) < 4 or parts[0] != "api":
        return None
    job = svc.jobs.get_job(parts[2])
    if job is None or (job.source.bucket, job.source.name) != (event.bucket, event.name):
        return None
    if job.source.generation == "":
        svc.jobs.update_job(job.job_id, {
            "source": job.source.model_copy(update={"generation": event.generation}).model_dump()
        })
    elif job.source.generation != event.generation:
        return None  # a second upload to the same signed URL: a job of its own
    return job.job_id


def _prepare(svc: Stores, job: Job) -> int:
    s = svc.settings
    src = job.source
    info = svc.blobs.stat(src.bucket, src.name)
    if info is None:
        raise RejectedInputError(
            "source_missing", f"{src.name} was deleted before it could be processed."
        )
    if info.generation != src.generation:
        raise RejectedInputError(
            "source_replaced",
            f"{src.name} was overwritten before it could be processed; the newer upload is "
            "processed as its own job.",
        )
    if info.size == 0:
        raise RejectedInputError("empty_file", f"{src.name} is empty (0 bytes).")
    if info.size > s.max_upload_bytes:
        raise RejectedInputError(
            "too_large",
            f"{src.name} is {info.size / 1e6:.1f} MB; the limit is "
            f"{s.max_upload_bytes / 1e6:.0f} MB.",
        )

    with (
        tracer().start_as_current_span("decode", attributes={"audiary.bytes": info.size}),
        tempfile.TemporaryDirectory(prefix="audiary-ingest-") as tmp,
    ):
        original = Path(tmp) / "original"
        canonical = Path(tmp) / "audio.wav"
        svc.blobs.download_file(src.bucket, src.name, original)
        audio = decode_to_canonical(
            original,
            canonical,
            AudioLimits(
                max_duration_s=s.max_duration_s,
                min_duration_s=s.min_duration_s,
                silence_dbfs=s.silence_dbfs,
            ),
        )
        key = canonical_key(job.job_id)
        svc.blobs.upload_file(s.work_bucket, key, canonical, content_type="audio/wav")

    spans = plan_chunks(
        audio.levels_db, audio.samples, target_s=chunk_target(s), search_s=s.chunk_search_s
    )
    chunks = [
        Chunk(job_id=job.job_id, index=i, start_sample=sp.start_sample, end_sample=sp.end_sample)
        for i, sp in enumerate(spans)
    ]
    svc.jobs.put_chunks(job.job_id, chunks)
    svc.jobs.update_job(
        job.job_id,
        {
            "duration_s": audio.duration_s,
            "audio_uri": f"{s.work_bucket}/{key}",
            "source": src.model_copy(
                update={"size": info.size, "content_type": info.content_type}
            ).model_dump(),
        },
    )
    # QUEUED before the first message, so a fast transcriber cannot skip it; whether every
    # message went out is recorded after, so a redelivery can finish an interrupted fan-out.
    advance(svc, job.job_id, JobStatus.QUEUED)
    publish_chunks(svc, job.job_id, chunks, key)
    trace.get_current_span().set_attributes(
        {"audiary.chunks": len(chunks), "audiary.audio_seconds": audio.duration_s})
    log.info(
        "queued %d chunks for %.1f s of %s audio",
        len(chunks),
        audio.samples / SAMPLE_RATE,
        audio.source_format,
        extra={"job_id": job.job_id},
    )
    return len(chunks)


def publish_chunks(svc: Stores, job_id: str, chunks: list[Chunk], audio_key: str) -> None:
    """One message per chunk, then `chunks_published` on the job."""
    s = svc.settings
    for chunk in chunks:
        task = messages.ChunkTask(
            job_id=job_id,
            index=chunk.index,
            start_sample=chunk.start_sample,
            end_sample=chunk.end_sample,
            audio_bucket=s.work_bucket,
            audio_key=audio_key,
        )
        svc.publisher.publish(
            s.topic_transcribe_chunk,
            messages.encode(task),
            messages.attributes_for(job_id, chunk=str(chunk.index)),
        )
    svc.jobs.update_job(job_id, {"chunks_published": True})


def _reject(svc: Stores, job: Job, exc: RejectedInputError) -> None:
    s = svc.settings
    src = job.source
    quarantined: str | None = None
    if svc.blobs.stat(src.bucket, src.name) is not None:
        key = quarantine_key(s.quarantine_prefix, job.job_id, src.name)
        svc.blobs.copy(src.bucket, src.name, src.bucket, key)
        quarantined = f"{src.bucket}/{key}"
    advance(
        svc,
        job.job_id,
        JobStatus.REJECTED,
        error=JobError(code=exc.code, message=exc.message, stage=STAGE),
        fields={"quarantine_uri": quarantined},
        stage=STAGE,
    )
    log.warning("rejected: %s (%s)", exc.message, exc.code, extra={"job_id": job.job_id})


def chunk_target(s: Settings) -> float:
    """How long ingest makes a chunk for the model and device the transcriber is set to."""
    return chunk_length_s(
        s.chunk_target_s,
        realtime_factor=s.realtime_factor or realtime_factor(s.model, s.device),
        ack_deadline_s=s.ack_deadline_s, concurrency=s.transcriber_concurrency)
