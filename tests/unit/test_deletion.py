"""Deleting a job leaves nothing of it, and a stage in flight or redelivered later writes
nothing back (on the in-memory adapters; the contract suite holds them to the real ones)."""

from __future__ import annotations

import pytest

from audiary.adapters.extractive import ExtractiveNoteWriter
from audiary.domain.jobs import JobStatus
from audiary.services import jobs as use_cases
from audiary.services.ingest import ingest
from audiary.services.notes.breaker import CircuitBreaker
from audiary.services.notes.router import NoteRouter, Provider
from audiary.services.summarize import summarize
from audiary.services.transcription import handle_chunk
from audiary.settings import Settings
from audiary.wire import messages
from tests.fakes.stores import memory_stores
from tests.media import DEMO_SAMPLE, decode, encode
from tests.unit.test_ingest import drop
from tests.unit.test_transcription import Stub


@pytest.fixture
def svc():
    settings = Settings(blob_backend="memory", job_backend="memory", publisher_backend="memory",
                        chunk_target_s=4.0, chunk_search_s=1.0)
    s = memory_stores(settings)
    for bucket in (settings.uploads_bucket, settings.work_bucket, settings.transcripts_bucket,
                   settings.feedback_bucket):
        s.blobs.ensure_bucket(bucket)
    return s


def everything(svc, job_id: str) -> dict[str, object]:
    """Every object and document that names the job."""
    s = svc.settings
    found: dict[str, object] = {}
    for bucket in (s.uploads_bucket, s.work_bucket, s.transcripts_bucket, s.feedback_bucket):
        keys = [i.key for i in svc.blobs.list(bucket) if job_id in i.key or "inbox/" in i.key]
        if keys:
            found[bucket] = keys
    if svc.jobs.get_job(job_id) is not None:
        found["job"] = job_id
    if svc.jobs.get_chunks(job_id):
        found["chunks"] = len(svc.jobs.get_chunks(job_id))
    if svc.notes.get_note(job_id) is not None:
        found["note"] = job_id
    if svc.notes.list_feedback(job_id):
        found["feedback"] = len(svc.notes.list_feedback(job_id))
    if svc.notes.list_review_items(job_id=job_id):
        found["review"] = len(svc.notes.list_review_items(job_id=job_id))
    return found


def router(svc) -> NoteRouter:
    return NoteRouter([Provider(ExtractiveNoteWriter(), CircuitBreaker(3, 60))], svc.notes)


def run_pipeline(svc, tmp_path, samples=None, name="a.flac"):
    """A finished job with a note and feedback, and every message it was sent (of 12 s of the
    demo diary, or of `samples`)."""
    audio = decode(DEMO_SAMPLE, seconds=12.0) if samples is None else samples
    event = drop(svc, encode(audio, tmp_path / name))
    job_id = ingest(svc, event).job_id
    tasks = [t for t in (messages.parse_chunk_task(m.data)
                         for m in svc.publisher.messages("transcribe-chunk"))
             if t.job_id == job_id]
    for task in tasks:
        handle_chunk(svc, Stub(), task)
    (ready,) = [r for r in (messages.parse_transcript_ready(m.data)
                            for m in svc.publisher.messages("transcript-ready"))
                if r.job_id == job_id]
    summarize(svc, router(svc), ready, message_id="m-1")
    job = svc.jobs.get_job(job_id)
    assert job.status is JobStatus.DONE
    use_cases.store_feedback(svc, job, "key:k", corrected_transcript="fixed", flagged=True,
                             comment=None)
    return job, event, tasks, ready


def test_delete_removes_every_object_and_document(svc, tmp_path):
    job, *_ = run_pipeline(svc, tmp_path)
    before = everything(svc, job.job_id)
    assert {"job", "chunks", "note", "feedback", svc.settings.feedback_bucket,
            svc.settings.transcripts_bucket, svc.settings.work_bucket} <= set(before)
    note = svc.notes.get_note(job.job_id)
    # As an LLM note would be: cached under its content key, paid for by this job.
    svc.notes.put_cached(note)
    other = note.model_copy(update={"job_id": "someone-else", "cache_key": "other-content"})
    svc.notes.put_cached(other)
    use_cases.delete_job(svc, job)
    assert everything(svc, job.job_id) == {}
    assert svc.notes.get_cached(note.cache_key) is None
    assert svc.notes.get_cached("other-content") == other  # another job's stays
    assert svc.jobs.deleted(job.job_id).source == job.source


def test_every_redelivery_after_the_delete_does_nothing_and_writes_nothing(svc, tmp_path):
    job, event, tasks, ready = run_pipeline(svc, tmp_path)
    use_cases.delete_job(svc, job)
    assert ingest(svc, event).detail == "the job was deleted; nothing to do"
    for task in tasks:
        assert handle_chunk(svc, Stub(), task).detail == "the job was deleted; nothing to do"
    assert summarize(svc, router(svc), ready, message_id="m-9").detail == (
        "the job was deleted; nothing to do")
    assert everything(svc, job.job_id) == {}


def test_a_note_written_by_a_delivery_in_flight_is_removed_by_that_delivery(svc, tmp_path):
    event = drop(svc, encode(decode(DEMO_SAMPLE, seconds=12.0), tmp_path / "a.flac"))
    job_id = ingest(svc, event).job_id
    for m in svc.publisher.messages("transcribe-chunk"):
        handle_chunk(svc, Stub(), messages.parse_chunk_task(m.data))
    (ready,) = [r for r in (messages.parse_transcript_ready(m.data)
                            for m in svc.publisher.messages("transcript-ready"))
                if r.job_id == job_id]

    class DeletedMeanwhile(ExtractiveNoteWriter):
        def write(self, transcript, *, recorded_at, usage):
            use_cases.delete_job(svc, svc.jobs.get_job(job_id))  # the user deletes it now
            return super().write(transcript, recorded_at=recorded_at, usage=usage)

    writing = NoteRouter([Provider(DeletedMeanwhile(), CircuitBreaker(3, 60))], svc.notes)
    # The note goes in after the delete's purge; the delivery sees the tombstone after its
    # write and removes it itself (a redelivery may never come).
    outcome = summarize(svc, writing, ready, message_id="m-1")
    assert outcome.detail == "the job was deleted; nothing to do"
    assert everything(svc, job_id) == {}
    again = summarize(svc, router(svc), ready, message_id="m-1")  # Pub/Sub delivers again
    assert again.detail == "the job was deleted; nothing to do"
    assert everything(svc, job_id) == {}


def test_a_chunk_decoded_while_its_job_is_deleted_leaves_nothing(svc, tmp_path):
    event = drop(svc, encode(decode(DEMO_SAMPLE, seconds=12.0), tmp_path / "a.flac"))
    job_id = ingest(svc, event).job_id
    tasks = [t for t in (messages.parse_chunk_task(m.data)
                         for m in svc.publisher.messages("transcribe-chunk"))
             if t.job_id == job_id]

    class DeletedMeanwhile(Stub):
        def transcribe(self, samples, *, language=None, word_timestamps=None):
            use_cases.delete_job(svc, svc.jobs.get_job(job_id))  # the user deletes it now
            return super().transcribe(samples, language=language)

    outcome = handle_chunk(svc, DeletedMeanwhile(), tasks[0])
    assert outcome.detail == "the job was deleted; nothing to do"
    assert everything(svc, job_id) == {}
