"""The summarize service on the in-memory adapters, with the offline extractive writer."""

import json
from datetime import timedelta

import pytest

from audiary.adapters.extractive import ExtractiveNoteWriter
from audiary.domain.jobs import Job, JobStatus, SourceObject
from audiary.domain.transcript import Segment, Transcript
from audiary.services.notes.breaker import CircuitBreaker
from audiary.services.notes.router import NoteRouter, Provider
from audiary.services.progress import AnnouncementPending
from audiary.services.summarize import summarize
from audiary.settings import Settings
from audiary.wire import messages
from tests.fakes.stores import memory_stores
from tests.media import REPO

TEXT = (REPO / "samples" / "diary-demo.txt").read_text()


@pytest.fixture
def svc():
    settings = Settings(blob_backend="memory", job_backend="memory", publisher_backend="memory",
                        max_attempts=2)
    s = memory_stores(settings)
    for bucket in (settings.uploads_bucket, settings.transcripts_bucket):
        s.blobs.ensure_bucket(bucket)
    return s


def transcribed_job(svc, *, recorded_at: str | None = "2026-11-03T21:00:00+00:00"):
    s = svc.settings
    info = svc.blobs.put(s.uploads_bucket, "inbox/day.ogg", b"audio",
                         metadata={"recorded-at": recorded_at} if recorded_at else None)
    job, _ = svc.jobs.create_job(Job(
        job_id="job-1", duration_s=1800.0,
        source=SourceObject(bucket=info.bucket, name=info.key, generation=info.generation),
    ))
    for status in (JobStatus.QUEUED, JobStatus.TRANSCRIBING, JobStatus.TRANSCRIBED):
        svc.jobs.advance(job.job_id, status)
    paragraphs = [p.replace("\n", " ") for p in TEXT.split("\n\n") if p.strip()]
    transcript = Transcript(job_id=job.job_id, segments=[
        Segment(start=i * 10.0, end=i * 10.0 + 9.0, text=" " + p)
        for i, p in enumerate(paragraphs)
    ])
    svc.blobs.put(s.transcripts_bucket, "job-1.json", transcript.model_dump_json().encode())
    return messages.TranscriptReady(job_id="job-1", transcript_bucket=s.transcripts_bucket,
                                    transcript_key="job-1.json")


def extractive_router(svc):
    return NoteRouter([Provider(ExtractiveNoteWriter(), CircuitBreaker(3, 60))], svc.notes)


def test_note_written_job_done_and_announced_once(svc):
    ready = transcribed_job(svc)
    outcome = summarize(svc, extractive_router(svc), ready, message_id="m-1")
    assert outcome.record is not None
    job = svc.jobs.get_job("job-1")
    assert job.status is JobStatus.DONE
    assert job.note_provider == "extractive"
    assert set(job.timestamps) >= {"TRANSCRIBED", "SUMMARIZING", "DONE"}
    note = svc.notes.get_note("job-1")
    assert note.extractive
    assert note.note.date == "2026-11-03"
    assert "Sarah" in note.note.people
    finished = svc.publisher.messages("job-finished")
    assert [json.loads(m.data) for m in finished] == [{"job_id": "job-1", "status": "DONE"}]

    again = summarize(svc, extractive_router(svc), ready, message_id="m-2")  # a duplicate
    assert again.detail == "job is DONE; nothing to do"
    assert len(svc.publisher.messages("job-finished")) == 1


def test_every_provider_failing_is_retried_then_ends_failed_with_the_reason(svc):
    ready = transcribed_job(svc)
    nobody = NoteRouter([], svc.notes)
    with pytest.raises(Exception, match="no provider is configured"):
        summarize(svc, nobody, ready, message_id="m-1")  # first attempt: raise, so Pub/Sub
        # redelivers
    assert svc.jobs.get_job("job-1").status is JobStatus.SUMMARIZING
    outcome = summarize(svc, nobody, ready, message_id="m-1")  # the last attempt allowed
    job = svc.jobs.get_job("job-1")
    assert outcome.detail == "every provider failed; job FAILED"
    assert job.status is JobStatus.FAILED
    assert (job.error.stage, job.error.code) == ("summarize", "summarize_failed")
    assert "no provider is configured" in job.error.message
    assert svc.blobs.get(svc.settings.transcripts_bucket, "job-1.json")  # transcript intact
    assert svc.notes.get_note("job-1") is None
    finished = svc.publisher.messages("job-finished")
    assert [json.loads(m.data) for m in finished] == [{"job_id": "job-1", "status": "FAILED"}]


def test_a_duplicate_while_the_note_is_written_calls_no_model(svc):
    ready = transcribed_job(svc)
    calls = []

    class Counting(ExtractiveNoteWriter):
        def write(self, transcript, *, recorded_at, usage):
            calls.append(transcript.job_id)
            # The duplicate arrives while this delivery holds the lease.
            duplicate = summarize(svc, router, ready, message_id="m-2")
            assert duplicate.detail == "another delivery is writing this note; nothing to do"
            return super().write(transcript, recorded_at=recorded_at, usage=usage)

    router = NoteRouter([Provider(Counting(), CircuitBreaker(3, 60))], svc.notes)
    assert summarize(svc, router, ready, message_id="m-1").record is not None
    assert calls == ["job-1"]
    assert len(svc.publisher.messages("job-finished")) == 1
    assert svc.jobs.get_job("job-1").summarize_attempts == 1


def test_a_redelivery_announces_a_done_job_whose_announcement_was_lost(svc):
    ready = transcribed_job(svc)
    summarize(svc, extractive_router(svc), ready, message_id="m-1")
    # As if the process died after DONE and before job-finished went out. Right after the
    # transition, its delivery may still be announcing: a duplicate comes back later.
    svc.jobs.update_job("job-1", {"finished_announced": False})
    with pytest.raises(AnnouncementPending):
        summarize(svc, extractive_router(svc), ready, message_id="m-2")
    done_at = svc.jobs.get_job("job-1").timestamps["DONE"]
    svc.jobs.update_job("job-1", {"timestamps.DONE": done_at - timedelta(seconds=60)})
    again = summarize(svc, extractive_router(svc), ready, message_id="m-1")
    assert again.detail == "job is DONE; job-finished announced again"
    assert summarize(svc, extractive_router(svc), ready, message_id="m-1").detail == (
        "job is DONE; nothing to do")
    # the lost one and the one sent again; no third
    assert len(svc.publisher.messages("job-finished")) == 2


def test_without_metadata_the_note_date_is_the_upload_day(svc):
    ready = transcribed_job(svc, recorded_at=None)
    received = svc.jobs.get_job("job-1").timestamps["RECEIVED"]
    summarize(svc, extractive_router(svc), ready, message_id="m-1")
    # The demo text says "Monday, the third of November": the year comes from the upload.
    assert svc.notes.get_note("job-1").note.date == f"{received.year}-11-03"
