"""Faults on the native stack end every job in a named state, and announce it once.

Real emulators, real processes: chunk messages whose audio is gone, and a transcriber that is
down while Pub/Sub spends every delivery of a message (it dead-letters it, and the
`deadletters` function ends the job).
"""

from __future__ import annotations

import pytest

from audiary.domain.jobs import Chunk, JobStatus, SourceObject, new_job, utcnow
from audiary.domain.layout import canonical_key
from audiary.local.stack import NativeStack
from audiary.ports import Stores
from audiary.services.ingest import publish_chunks as send_chunks
from tests.e2e.conftest import poll, wait_for_status

pytestmark = pytest.mark.e2e


def queued_job(svc: Stores, name: str, chunks: int = 2) -> str:
    """A job as ingest leaves it, QUEUED with its chunk plan, but with no audio in the work
    bucket: every chunk message will fail."""
    job_id = f"fault-{name}-{utcnow().strftime('%H%M%S%f')}"
    svc.jobs.create_job(new_job(job_id, SourceObject(
        bucket=svc.settings.uploads_bucket, name=f"inbox/{job_id}.wav", generation="1"),
        received_at=utcnow()))
    plan = [Chunk(job_id=job_id, index=i, start_sample=i * 16_000,
                  end_sample=(i + 1) * 16_000) for i in range(chunks)]
    svc.jobs.put_chunks(job_id, plan)
    svc.jobs.advance(job_id, JobStatus.QUEUED)
    return job_id


def test_a_chunk_whose_audio_is_gone_fails_the_job_on_its_last_delivery(svc: Stores):
    job_id = queued_job(svc, "poisoned")
    send_chunks(svc, job_id, svc.jobs.get_chunks(job_id), canonical_key(job_id))
    job = wait_for_status(svc, job_id, {JobStatus.FAILED, JobStatus.DONE}, timeout_s=180)
    assert job.status is JobStatus.FAILED
    assert (job.error.stage, job.error.code) == ("transcribe", "transcription_failed")
    assert "NotFoundError" in job.error.message or "deliveries" in job.error.message
    poll(lambda: svc.jobs.get_job(job_id), lambda j: j is not None and j.finished_announced, 30)


def test_a_message_pubsub_gives_up_on_is_ended_by_the_dead_letter_consumer(
    svc: Stores, stack: NativeStack
):
    transcriber = next(p for p in stack.processes if p.name == "transcriber")
    job_id = queued_job(svc, "undelivered", chunks=1)
    transcriber.stop()
    try:
        send_chunks(svc, job_id, svc.jobs.get_chunks(job_id), canonical_key(job_id))
        job = wait_for_status(svc, job_id, {JobStatus.FAILED}, timeout_s=180)
    finally:
        transcriber.start().wait_ready(120)
    assert (job.error.stage, job.error.code) == ("transcribe", "transcription_failed")
    assert f"{svc.settings.max_attempts} deliveries" in job.error.message
    assert "never acknowledged" in job.error.message
    assert svc.jobs.get_chunks(job_id)[0].attempts == 0  # no delivery reached the handler
    poll(lambda: svc.jobs.get_job(job_id), lambda j: j is not None and j.finished_announced, 30)
