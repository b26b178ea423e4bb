"""Job use cases behind the HTTPS API: uploads, jobs from URLs or inbox objects, deletion and
feedback. Refusals raise `RequestError` subclasses; the API turns them into HTTP answers."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from audiary.domain.jobs import Job, JobStatus, SourceObject, job_id_for, new_job, utcnow
from audiary.domain.layout import transcript_version_key
from audiary.domain.notes import Feedback, FeedbackSource, SegmentCorrection
from audiary.domain.transcript import Transcript
from audiary.errors import AudiaryError, ConflictError, InvalidRequestError, TooLargeError
from audiary.observability.logs import bind_job
from audiary.ports import BlobInfo, SignedUpload, Stores
from audiary.services.cleanup import purge
from audiary.settings import Settings
from audiary.wire import messages
from audiary.wire.messages import inject_trace
from audiary.wire.storage_events import ObjectEvent, notification_message

__all__ = [
    "API_UPLOADS",
    "FeedbackStored",
    "Upload",
    "api_object_key",
    "correct_segments",
    "create_upload",
    "delete_job",
    "job_from_object",
    "job_from_url",
    "load_transcript",
    "store_feedback",
    "summarize_again",
]

log = logging.getLogger(__name__)

API_UPLOADS = "api/"  # inbox/api/<owner id>/<job id>/<file>: uploads that come through the API
# GCS custom metadata is limited to 8 KiB in all; long transcripts go by reference.
METADATA_TEXT_CHARS = 2000


@dataclass(frozen=True)
class Upload:
    job: Job
    signed: SignedUpload


@dataclass(frozen=True)
class FeedbackStored:
    feedback: Feedback
    feedback_object: str  # gs:// URI of the audio copy in the userfeedback bucket


def api_object_key(settings: Settings, owner: str, job_id: str, filename: str) -> str:
    """Inbox key of an upload made through the API, under its owner and job."""
    safe = re.sub(r"[^\w.-]+", "_", PurePosixPath(filename).name).strip("._") or "audio"
    owner_id = re.sub(r"[^\w-]+", "_", owner)
    return f"{settings.inbox_prefix}{API_UPLOADS}{owner_id}/{job_id}/{safe}"


def _new_api_job_id() -> str:
    job_id = secrets.token_hex(12)
    bind_job(job_id)
    return job_id


def create_upload(svc: Stores, owner: str, filename: str, content_type: str,
                  size_bytes: int, *, speaker: str | None = None) -> Upload:
    """A job waiting for its audio, and a signed URL to PUT exactly that audio into the inbox."""
    s = svc.settings
    if size_bytes > s.max_upload_bytes:
        raise TooLargeError("too_large", f"{size_bytes} bytes is above the limit of "
                            f"{s.max_upload_bytes} bytes")
    job_id = _new_api_job_id()
    key = api_object_key(s, owner, job_id, filename)
    signed = svc.blobs.signed_put_url(s.uploads_bucket, key, content_type=content_type,
                                      size=size_bytes, expires_s=s.upload_url_ttl_s)
    # The job exists from now on, so GET /v1/jobs/{id} works before the upload lands;
    # ingest recognises it by the object name (see services.ingest).
    job, _ = svc.jobs.create_job(new_job(job_id, SourceObject(
        bucket=s.uploads_bucket, name=key, generation="", size=size_bytes,
        content_type=content_type), owner=owner, speaker=speaker))
    return Upload(job=job, signed=signed)


def job_from_url(svc: Stores, owner: str, url: str) -> Job:
    """Stream `url` (SSRF-safe, size-capped) into the inbox as a new job of `owner`.

    The body goes straight to the bucket a few MiB at a time (never whole into memory or
    /tmp, which is memory on Cloud Functions). The job exists first, so the upload's
    notification finds it; if the download fails, the job goes again and nothing is left.
    """
    s = svc.settings
    try:
        svc.urls.check(url)  # refused URLs never become jobs
    except AudiaryError as exc:
        raise InvalidRequestError("invalid_audio_url", str(exc)) from exc
    job_id = _new_api_job_id()
    name = PurePosixPath(url.split("?", 1)[0]).name or "audio"
    key = api_object_key(s, owner, job_id, name)
    job, _ = svc.jobs.create_job(new_job(job_id, SourceObject(
        bucket=s.uploads_bucket, name=key, generation="", size=None, content_type=None),
        owner=owner))

    def upload(body: IO[bytes], content_type: str | None) -> BlobInfo:
        # The upload's notification (GCS, or the local watcher) starts ingest as for any drop.
        return svc.blobs.upload_stream(s.uploads_bucket, key, body, content_type=content_type)

    try:
        info = svc.urls.stream(url, upload, max_bytes=s.audio_url_max_bytes)
    except AudiaryError as exc:
        svc.jobs.delete_job(job_id)
        raise InvalidRequestError("invalid_audio_url", str(exc)) from exc
    svc.jobs.update_job(job_id, {"source": job.source.model_copy(
        update={"size": info.size, "content_type": info.content_type}).model_dump()})
    return job.model_copy(update={"source": job.source.model_copy(
        update={"size": info.size, "content_type": info.content_type})})


def job_from_object(svc: Stores, owner: str, name: str) -> Job:
    """A job for an object already in the inbox (not one uploaded through the API)."""
    s = svc.settings
    name = name.removeprefix(f"gs://{s.uploads_bucket}/")
    if not name.startswith(s.inbox_prefix) or name.startswith(s.inbox_prefix + API_UPLOADS):
        raise InvalidRequestError(
            "invalid_object", f"object must be in gs://{s.uploads_bucket}/{s.inbox_prefix} "
            f"(and not under {s.inbox_prefix}{API_UPLOADS})")
    info = svc.blobs.stat(s.uploads_bucket, name)
    if info is None:
        raise InvalidRequestError("invalid_object",
                                  f"gs://{s.uploads_bucket}/{name} does not exist")
    job_id = job_id_for(info.bucket, info.key, info.generation)
    bind_job(job_id)
    job, created = svc.jobs.create_job(new_job(job_id, SourceObject(
        bucket=info.bucket, name=info.key, generation=info.generation, size=info.size,
        content_type=info.content_type), owner=owner))
    if not created and job.owner != owner:
        raise ConflictError("conflict", "this object is already being processed for someone else")
    if created:  # as GCS would on upload: ingest takes it from here
        data, attributes = notification_message(ObjectEvent(
            info.bucket, info.key, info.generation, info.size, info.content_type))
        # Unlike GCS, this notification can carry the request's trace on to ingest.
        svc.publisher.publish(s.topic_audio_uploaded, data, inject_trace(attributes))
    return job


def delete_job(svc: Stores, job: Job) -> None:
    """Remove the job and everything it made; stages still in flight find its tombstone and
    remove what they write after this (see services.cleanup)."""
    svc.jobs.delete_job(job.job_id)  # the tombstone first
    purge(svc, job.job_id, job.source)


def load_transcript(svc: Stores, job: Job, version: int | None = None) -> Transcript:
    """One version of the job's transcript (default: the latest)."""
    version = version or job.transcript_version
    if not 1 <= version <= job.transcript_version:
        raise InvalidRequestError(
            "invalid_version", f"job {job.job_id} has transcript versions 1 to "
            f"{job.transcript_version}; there is no version {version}")
    key = transcript_version_key(job.job_id, version)
    raw = svc.blobs.get(svc.settings.transcripts_bucket, key)
    return Transcript.model_validate_json(raw)


def correct_segments(svc: Stores, job: Job, edits: Mapping[int, str],
                     ) -> tuple[Transcript, list[SegmentCorrection]]:
    """Write the next transcript version with `edits` (segment index -> new text) applied to
    the latest one; times stay, nothing is overwritten. Unchanged text makes no version."""
    current = load_transcript(svc, job)
    segments = list(current.segments)
    if bad := sorted(i for i in edits if not 0 <= i < len(segments)):
        raise InvalidRequestError(
            "invalid_segment", f"the transcript has segments 0 to {len(segments) - 1}; "
            f"no segment {bad[0]}")
    corrections = []
    for index, text in sorted(edits.items()):
        before = segments[index]
        if text.strip() == before.text.strip():
            continue
        corrections.append(SegmentCorrection(index=index, start=before.start, end=before.end,
                                             before=before.text, after=text.strip()))
        # Word times spelled the old text: they go; the segment keeps its own times.
        segments[index] = before.model_copy(update={"text": text.strip(), "words": None})
    if not corrections:
        return current, []
    version = job.transcript_version + 1
    corrected = current.model_copy(update={"segments": segments})
    key = transcript_version_key(job.job_id, version)
    bucket = svc.settings.transcripts_bucket
    if svc.blobs.stat(bucket, key) is not None:
        raise ConflictError("version_conflict", "the transcript was corrected meanwhile; "
                            "load it again and repeat the correction")
    svc.blobs.put(bucket, key, corrected.model_dump_json(indent=2).encode(),
                  content_type="application/json")
    svc.jobs.update_job(job.job_id, {"transcript_version": version})
    return corrected, corrections


def summarize_again(svc: Stores, job: Job) -> int:
    """Ask for a new note version from the job's latest transcript version (written by the
    summarize function, which keeps the earlier note); returns that transcript version."""
    if job.status is not JobStatus.DONE:
        raise ConflictError("not_ready", f"job {job.job_id} is {job.status}: it has no note "
                            "to write again yet")
    note = svc.notes.get_note(job.job_id)
    if note is not None and note.transcript_version >= job.transcript_version:
        raise ConflictError("up_to_date", f"the note is already from transcript version "
                            f"{note.transcript_version}, the latest; correct the transcript "
                            "first")
    s = svc.settings
    ready = messages.TranscriptReady(
        job_id=job.job_id, transcript_bucket=s.transcripts_bucket,
        transcript_key=transcript_version_key(job.job_id, job.transcript_version),
        transcript_version=job.transcript_version)
    svc.publisher.publish(s.topic_transcript_ready, messages.encode(ready),
                          messages.attributes_for(job.job_id))
    return job.transcript_version


def store_feedback(svc: Stores, job: Job, owner: str, *, corrected_transcript: str | None,
                   flagged: bool, comment: str | None,
                   segment_edits: Mapping[int, str] | None = None,
                   source: FeedbackSource = "api", feedback_id: str | None = None,
                   flagged_segments: Sequence[int] = (),
                   ) -> FeedbackStored:
    """Feedback document, a copy of the audio in the userfeedback bucket carrying the
    correction, and the review state on the original upload. `segment_edits` also make the
    next transcript version (and, unless given, the corrected text is that version's)."""
    s = svc.settings
    if svc.blobs.stat(job.source.bucket, job.source.name) is None:
        raise ConflictError("audio_gone", "the job's audio no longer exists")
    corrections: list[SegmentCorrection] = []
    version: int | None = None
    if segment_edits:
        corrected, corrections = correct_segments(svc, job, segment_edits)
        if corrections:
            version = job.transcript_version + 1
            corrected_transcript = corrected_transcript or corrected.text
    now = utcnow()
    fb = Feedback(feedback_id=feedback_id or secrets.token_hex(10), job_id=job.job_id,
                  owner=owner, corrected_transcript=corrected_transcript, flagged=flagged,
                  comment=comment, source=source, created_at=now, corrections=corrections,
                  transcript_version=version, flagged_segments=sorted(set(flagged_segments)))
    svc.notes.put_feedback(fb)
    stamp = now.isoformat()
    dest = f"{job.job_id}/{PurePosixPath(job.source.name).name}"
    svc.blobs.copy(job.source.bucket, job.source.name, s.feedback_bucket, dest)
    corrected_text = corrected_transcript or ""
    svc.blobs.update_metadata(s.feedback_bucket, dest, {
        "corrected_transcript": corrected_text[:METADATA_TEXT_CHARS],
        "corrected_transcript_truncated": str(len(corrected_text) > METADATA_TEXT_CHARS).lower(),
        "feedback_id": fb.feedback_id,
        "timestamp": stamp,
    })
    machine = job.text or ""
    svc.blobs.update_metadata(job.source.bucket, job.source.name, {
        "transcript": machine[:METADATA_TEXT_CHARS],
        "timestamp": stamp,
        "flagged": str(flagged).lower(),
    })
    if version is not None:  # the corrections stream (the learning function's datasets)
        corrected_msg = messages.TranscriptCorrected(
            job_id=job.job_id, transcript_version=version,
            segments=[c.index for c in corrections], source=source)
        svc.publisher.publish(s.topic_transcript_corrected, messages.encode(corrected_msg),
                              messages.attributes_for(job.job_id))
    return FeedbackStored(fb, f"gs://{s.feedback_bucket}/{dest}")
