"""Chunk transcription and the fan-in that completes a job."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray
from opentelemetry import trace

from audiary.domain.audio import SAMPLE_RATE, pcm_to_float, sample_range_bytes
from audiary.domain.jobs import TERMINAL, Chunk, ChunkStatus, FanIn, JobStatus
from audiary.domain.layout import chunk_segments_key, transcript_key
from audiary.domain.transcript import Segment, Transcript, assemble
from audiary.errors import NotFoundError
from audiary.observability import metrics
from audiary.observability.logs import job_context
from audiary.observability.telemetry import inference
from audiary.ports import Stores, Transcriber
from audiary.services.cleanup import DELETED, purge_if_deleted
from audiary.services.progress import (
    advance,
    check_announcement_due,
    fail,
    fail_on_last_attempt,
    resume_announcement,
)
from audiary.wire import messages

log = logging.getLogger(__name__)

STAGE = "transcribe"
# Firestore documents are capped at 1 MiB: chunk segments and job text beyond these sizes go
# to GCS and the document keeps a pointer.
INLINE_SEGMENTS_BYTES = 256 * 1024
INLINE_TEXT_CHARS = 400_000


@dataclass(frozen=True)
class ChunkOutcome:
    detail: str
    fan_in: FanIn | None = None
    transcript: Transcript | None = None


def handle_chunk(svc: Stores, model: Transcriber, task: messages.ChunkTask, *,
                 delivery_attempt: int | None = None) -> ChunkOutcome:
    """Transcribe one chunk, record it once, and finish the job if it was the last one.

    Repeat and out-of-order deliveries are expected; each is recognised and does no harm.
    `delivery_attempt` is Pub/Sub's count of this message's deliveries, where it sends one:
    the chunk's own count misses deliveries that never reached this handler.
    """
    with job_context(task.job_id):
        trace.get_current_span().set_attribute("audiary.chunk", task.index)
        return _handle_chunk(svc, model, task, delivery_attempt or 0)


def _handle_chunk(svc: Stores, model: Transcriber, task: messages.ChunkTask,
                  delivery_attempt: int) -> ChunkOutcome:
    s = svc.settings
    job = svc.jobs.get_job(task.job_id)
    if job is None:
        if purge_if_deleted(svc, task.job_id):  # and what a delivery in flight wrote
            return ChunkOutcome(DELETED)
        return ChunkOutcome(f"no job {task.job_id}; dropping the message")
    if job.status is JobStatus.TRANSCRIBED and not job.transcript_announced:
        # The delivery that assembled the transcript died before announcing it (or, moments
        # after the transition, is announcing it now: then this raises, to come back later).
        check_announcement_due(job, JobStatus.TRANSCRIBED, "transcript-ready")
        announce(svc, task.job_id)
        return ChunkOutcome("job is TRANSCRIBED; transcript-ready announced again")
    if job.status in TERMINAL and resume_announcement(svc, job, STAGE):
        return ChunkOutcome(f"job is {job.status}; job-finished announced again")
    if job.status not in (JobStatus.QUEUED, JobStatus.TRANSCRIBING):
        return ChunkOutcome(f"job is {job.status}; nothing to do")

    chunk = svc.jobs.start_chunk(task.job_id, task.index)
    if chunk.status is ChunkStatus.DONE:
        # Recorded by an earlier delivery; if that delivery died before assembling, finish here.
        fan_in = FanIn(counted=False, chunks_done=job.chunks_done, chunks_total=job.chunks_total)
        if fan_in.complete:
            return ChunkOutcome("repeat delivery", fan_in, _finish(svc, task.job_id, model))
        return ChunkOutcome("repeat delivery", fan_in)
    if chunk.attempts > 1:
        metrics.CHUNKS_RETRIED.inc()
    attempt = max(chunk.attempts, delivery_attempt)
    if attempt > s.max_attempts:
        fail(
            svc, task.job_id, "transcription_failed",
            f"chunk {task.index} failed {attempt - 1} times", STAGE,
        )
        return ChunkOutcome("retries exhausted; job FAILED")
    try:
        return _transcribe_chunk(svc, model, task, chunk, queued=job.status is JobStatus.QUEUED)
    except Exception as exc:
        if not fail_on_last_attempt(svc, task.job_id, attempt, exc, code="transcription_failed",
                                    what=f"chunk {task.index}", stage=STAGE):
            raise  # Pub/Sub delivers again
        return ChunkOutcome("retries exhausted; job FAILED")


def hand_back(svc: Stores, task: messages.ChunkTask, *, started: bool) -> None:
    """Give back a chunk this process will not finish (it is shutting down): publish its task
    again as a new message, and if this delivery had `started` it, take back the attempt it
    counted. The caller then acknowledges the delivery, so the interruption spends none of the
    chunk's attempts, neither Pub/Sub's nor the chunk's own."""
    with job_context(task.job_id):
        if started:
            try:
                svc.jobs.abandon_chunk(task.job_id, task.index)
            except NotFoundError:
                return  # the job was deleted meanwhile: nothing to give back
        svc.publisher.publish(svc.settings.topic_transcribe_chunk, messages.encode(task),
                              messages.attributes_for(task.job_id, chunk=str(task.index)))
        metrics.CHUNKS_HANDED_BACK.inc()
        log.warning("chunk %d handed back on shutdown", task.index,
                    extra={"job_id": task.job_id})


def _transcribe_chunk(svc: Stores, model: Transcriber, task: messages.ChunkTask, chunk: Chunk,
                      *, queued: bool) -> ChunkOutcome:
    s = svc.settings
    extra = {"job_id": task.job_id}
    if queued:  # the job's first chunks move it on; the others leave its document alone
        advance(svc, task.job_id, JobStatus.TRANSCRIBING)
    start, end = sample_range_bytes(chunk.start_sample, chunk.end_sample)
    try:
        pcm = svc.blobs.read_range(task.audio_bucket, task.audio_key, start, end)
    except NotFoundError as exc:
        if purge_if_deleted(svc, task.job_id):
            return ChunkOutcome(DELETED)
        # Ingest writes the audio before it sends a chunk: no later delivery will find it.
        fail(svc, task.job_id, "transcription_failed",
             f"chunk {task.index}: its audio {task.audio_bucket}/{task.audio_key} is gone "
             f"(NotFoundError: {exc})", STAGE)
        return ChunkOutcome("audio gone; job FAILED")
    samples = pcm_to_float(pcm)
    with inference(model, len(samples) / SAMPLE_RATE):
        language = s.language or _detected_language(model, samples)
        segments = model.transcribe(samples, language=language)
    log.info(
        "chunk %d: %.1f s of audio, %d segments, language %s", task.index,
        len(samples) / SAMPLE_RATE, len(segments), language, extra=extra,
    )

    seg_docs = [seg.model_dump(mode="json", exclude_none=True) for seg in segments]
    payload = json.dumps(seg_docs).encode()
    inline: list[dict[str, object]] | None = seg_docs
    uri: str | None = None
    if len(payload) > INLINE_SEGMENTS_BYTES:
        key = chunk_segments_key(task.job_id, task.index)
        svc.blobs.put(s.work_bucket, key, payload, content_type="application/json")
        inline, uri = None, f"{s.work_bucket}/{key}"
    text = " ".join(seg.text.strip() for seg in segments if seg.text.strip())
    try:
        fan_in = svc.jobs.complete_chunk(
            task.job_id, task.index, text=text, segments=inline, segments_uri=uri,
            language=language, claim=chunk.claim,
        )
    except NotFoundError:
        if purge_if_deleted(svc, task.job_id):  # deleted while decoding: remove what we wrote
            return ChunkOutcome(DELETED)
        raise
    if fan_in.complete:
        return ChunkOutcome("job complete", fan_in, _finish(svc, task.job_id, model))
    return ChunkOutcome(f"{fan_in.chunks_done}/{fan_in.chunks_total} chunks done", fan_in)


def _detected_language(model: Transcriber, samples: NDArray[Any]) -> str | None:
    """The language the model hears in the chunk, or None (the model decides as it goes)."""
    detected = model.detect_language(samples)
    return detected[0] if detected else None


def job_language(chunks: Sequence[Chunk]) -> str | None:
    """The language of most of the job's audio, as its chunks were decoded (ties: the
    earlier chunk's)."""
    spoken: dict[str, int] = {}
    for chunk in chunks:
        if chunk.language:
            spoken[chunk.language] = spoken.get(chunk.language, 0) + chunk.samples
    return max(spoken, key=spoken.__getitem__) if spoken else None


def announce(svc: Stores, job_id: str) -> None:
    """Publish `transcript-ready` for the job's stored transcript."""
    s = svc.settings
    ready = messages.TranscriptReady(job_id=job_id, transcript_bucket=s.transcripts_bucket,
                                     transcript_key=transcript_key(job_id))
    svc.publisher.publish(s.topic_transcript_ready, messages.encode(ready),
                          messages.attributes_for(job_id))
    svc.jobs.update_job(job_id, {"transcript_announced": True})


def _chunk_segments(svc: Stores, segments: list[dict[str, object]] | None,
                    uri: str | None) -> list[Segment]:
    if uri is not None:
        bucket, key = uri.split("/", 1)
        segments = json.loads(svc.blobs.get(bucket, key))
    return [Segment.model_validate(seg) for seg in segments or []]


def _finish(svc: Stores, job_id: str, model: Transcriber) -> Transcript:
    """Assemble, store and announce the transcript. Idempotent: same chunks, same transcript."""
    s = svc.settings
    job = svc.jobs.get_job(job_id)
    chunks = svc.jobs.get_chunks(job_id)
    transcript = assemble(
        job_id,
        (
            (c.start_sample / SAMPLE_RATE, _chunk_segments(svc, c.segments, c.segments_uri))
            for c in chunks
        ),
        language=s.language or job_language(chunks),
        model=model.model_name,
        duration_s=job.duration_s if job else None,
    )
    key = transcript_key(job_id)
    svc.blobs.put(
        s.transcripts_bucket,
        key,
        transcript.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )
    if purge_if_deleted(svc, job_id):  # deleted meanwhile: the transcript goes again
        log.info("job deleted while its transcript was assembled", extra={"job_id": job_id})
        return transcript
    text = transcript.text
    # TRANSCRIBED first, then the announcement: summarize must find the job TRANSCRIBED. Only
    # the delivery whose transition moved the job announces; if it dies in between, a
    # redelivered chunk finds TRANSCRIBED unannounced and announces.
    moved = advance(
        svc,
        job_id,
        JobStatus.TRANSCRIBED,
        fields={
            "transcript_uri": f"{s.transcripts_bucket}/{key}",
            "text": text if len(text) <= INLINE_TEXT_CHARS else None,
            "language": transcript.language,
            "model": model.model_name,
            "uncertain_segments": sum(seg.uncertain for seg in transcript.segments),
        },
    )
    if moved:
        metrics.SEGMENTS.labels("uncertain").inc(sum(s.uncertain for s in transcript.segments))
        metrics.SEGMENTS.labels("all").inc(len(transcript.segments))
        announce(svc, job_id)
    log.info("transcript stored: %d segments", len(transcript.segments), extra={"job_id": job_id})
    return transcript
