"""The sweeper on the in-memory adapters: a stalled job is re-driven once, then FAILED."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from audiary.domain.jobs import Chunk, JobStatus, SourceObject, new_job, utcnow
from audiary.domain.layout import canonical_key
from audiary.services.sweeper import sweep
from audiary.settings import Settings
from audiary.wire.messages import parse_chunk_task
from audiary.wire.storage_events import parse_pubsub_notification
from tests.fakes.stores import memory_stores

STALL_S = 3600.0


@pytest.fixture
def svc():
    return memory_stores(Settings(blob_backend="memory", job_backend="memory",
                                  publisher_backend="memory", stall_after_s=STALL_S))


def job_in(svc, status: JobStatus, job_id: str = "job-1", chunks: int = 0) -> str:
    svc.jobs.create_job(new_job(job_id, SourceObject(bucket="audiary-uploads",
                                                     name=f"inbox/{job_id}.wav", generation="7"),
                                received_at=utcnow()))
    if chunks:
        svc.jobs.put_chunks(job_id, [Chunk(job_id=job_id, index=i, start_sample=i * 16_000,
                                           end_sample=(i + 1) * 16_000) for i in range(chunks)])
    for step in (JobStatus.QUEUED, JobStatus.TRANSCRIBING, JobStatus.TRANSCRIBED,
                 JobStatus.SUMMARIZING):
        if status is JobStatus.RECEIVED or step is status:
            break
        svc.jobs.advance(job_id, step)
    if status is not JobStatus.RECEIVED:
        svc.jobs.advance(job_id, status)
    return job_id


def later(seconds: float = STALL_S + 1):
    return utcnow() + timedelta(seconds=seconds)


def test_a_job_still_within_the_stall_time_is_left_alone(svc):
    job_in(svc, JobStatus.TRANSCRIBING, chunks=2)
    outcome = sweep(svc, later(STALL_S - 60))
    assert (outcome.looked_at, outcome.redriven, outcome.failed) == (0, [], [])
    assert svc.publisher.messages(svc.settings.topic_transcribe_chunk) == []


def test_a_stalled_fan_out_gets_the_chunks_not_done_again(svc):
    job_id = job_in(svc, JobStatus.TRANSCRIBING, chunks=3)
    svc.jobs.complete_chunk(job_id, 1, text="done", segments=[], segments_uri=None)
    outcome = sweep(svc, later())
    assert outcome.redriven == [job_id]
    sent = [parse_chunk_task(m.data) for m in
            svc.publisher.messages(svc.settings.topic_transcribe_chunk)]
    assert sorted(t.index for t in sent) == [0, 2]
    assert {t.audio_key for t in sent} == {canonical_key(job_id)}


def test_a_fan_in_that_never_happened_gets_the_last_chunk_again(svc):
    job_id = job_in(svc, JobStatus.TRANSCRIBING, chunks=2)
    for index in (0, 1):
        svc.jobs.complete_chunk(job_id, index, text="done", segments=[], segments_uri=None)
    sweep(svc, later())
    (sent,) = svc.publisher.messages(svc.settings.topic_transcribe_chunk)
    assert parse_chunk_task(sent.data).index == 1  # a repeat delivery finishes the job


def test_a_stalled_upload_gets_its_notification_again(svc):
    job_id = job_in(svc, JobStatus.RECEIVED)
    sweep(svc, later())
    (sent,) = svc.publisher.messages(svc.settings.topic_audio_uploaded)
    event = parse_pubsub_notification({"attributes": sent.attributes,
                                       "data": base64.b64encode(sent.data)})
    assert (event.bucket, event.name, event.generation) == (
        "audiary-uploads", f"inbox/{job_id}.wav", "7")


@pytest.mark.parametrize("status", [JobStatus.TRANSCRIBED, JobStatus.SUMMARIZING])
def test_a_stalled_summary_gets_transcript_ready_again(svc, status):
    job_id = job_in(svc, status)
    sweep(svc, later())
    (sent,) = svc.publisher.messages(svc.settings.topic_transcript_ready)
    assert json.loads(sent.data)["job_id"] == job_id


def test_no_progress_after_the_re_drive_fails_the_job_and_announces_it_once(svc):
    job_id = job_in(svc, JobStatus.TRANSCRIBING, chunks=1)
    first = later()
    assert sweep(svc, first).redriven == [job_id]
    # The re-drive counts as progress: the next sweeps within the stall time do nothing.
    assert sweep(svc, first + timedelta(seconds=STALL_S - 1)).looked_at == 0
    outcome = sweep(svc, first + timedelta(seconds=STALL_S + 1))
    assert outcome.failed == [job_id]
    job = svc.jobs.get_job(job_id)
    assert job.status is JobStatus.FAILED
    assert (job.error.stage, job.error.code) == ("transcribe", "stalled")
    assert "re-sent" in job.error.message
    assert [json.loads(m.data) for m in svc.publisher.messages("job-finished")] == [
        {"job_id": job_id, "status": "FAILED"}]
    # An ended job leaves the sweep for good.
    assert sweep(svc, first + timedelta(days=1)).looked_at == 0


def test_progress_after_a_re_drive_earns_another_one(svc):
    job_id = job_in(svc, JobStatus.TRANSCRIBING, chunks=2)
    svc.jobs.update_job(job_id, {"progress_at": utcnow() - timedelta(seconds=STALL_S + 1)})
    assert sweep(svc).redriven == [job_id]
    svc.jobs.complete_chunk(job_id, 0, text="done", segments=[], segments_uri=None)  # progress
    job = svc.jobs.get_job(job_id)
    outcome = sweep(svc, job.progress_at + timedelta(seconds=STALL_S + 1))
    assert outcome.redriven == [job_id]
    assert svc.jobs.get_job(job_id).status is JobStatus.TRANSCRIBING


def test_ended_jobs_are_never_swept(svc):
    job_id = job_in(svc, JobStatus.TRANSCRIBING, chunks=1)
    svc.jobs.advance(job_id, JobStatus.FAILED)
    assert sweep(svc, later(10 * STALL_S)).looked_at == 0
