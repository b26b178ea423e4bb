"""The dead-letter consumer on the in-memory adapters: a letter ends its job, once."""

from __future__ import annotations

import json

import pytest

from audiary import names
from audiary.domain.jobs import JobStatus, SourceObject, job_id_for, new_job, utcnow
from audiary.services.deadletters import handle_dead_letter, source_subscription
from audiary.settings import Settings
from audiary.wire.storage_events import ObjectEvent, notification_message
from tests.fakes.stores import memory_stores


@pytest.fixture
def svc():
    return memory_stores(Settings(blob_backend="memory", job_backend="memory",
                                  publisher_backend="memory"))


def job_in(svc, status: JobStatus, job_id: str = "job-1") -> str:
    svc.jobs.create_job(new_job(job_id, SourceObject(bucket="uploads", name="inbox/a.wav",
                                                     generation="7"), received_at=utcnow()))
    for step in (JobStatus.QUEUED, JobStatus.TRANSCRIBING, JobStatus.TRANSCRIBED,
                 JobStatus.SUMMARIZING):
        if step is status:
            break
        svc.jobs.advance(job_id, step)
    svc.jobs.advance(job_id, status)
    return job_id


def finished(svc) -> list[dict[str, str]]:
    return [json.loads(m.data) for m in svc.publisher.messages("job-finished")]


def test_a_chunk_letter_fails_its_job_with_what_was_tried_and_announces_it(svc):
    job_id = job_in(svc, JobStatus.TRANSCRIBING)
    letter = {"job_id": job_id, "chunk": "3", "CloudPubSubDeadLetterSourceDeliveryCount": "5"}
    outcome = handle_dead_letter(svc, names.SUBSCRIPTION_TRANSCRIBER, b"{}", letter)
    assert outcome.failed
    job = svc.jobs.get_job(job_id)
    assert job.status is JobStatus.FAILED
    assert (job.error.stage, job.error.code) == ("transcribe", "transcription_failed")
    assert "chunk 3 after 5 deliveries to transcriber" in job.error.message
    assert finished(svc) == [{"job_id": job_id, "status": "FAILED"}]
    # The same letter again (Pub/Sub may dead-letter a message twice): nothing more.
    again = handle_dead_letter(svc, names.SUBSCRIPTION_TRANSCRIBER, b"{}", letter)
    assert again.detail == "job already FAILED; nothing to do"
    assert len(finished(svc)) == 1


def test_a_late_letter_leaves_a_finished_job_as_it_is(svc):
    job_id = job_in(svc, JobStatus.SUMMARIZING)
    svc.jobs.advance(job_id, JobStatus.DONE)
    outcome = handle_dead_letter(svc, names.SUBSCRIPTION_SUMMARIZE, b"{}", {"job_id": job_id})
    assert not outcome.failed
    assert svc.jobs.get_job(job_id).status is JobStatus.DONE
    assert finished(svc) == []


def test_an_upload_notification_letter_finds_its_job_by_the_object(svc):
    event = ObjectEvent("uploads", "inbox/a.wav", "7", 10, "audio/wav")
    job_id = job_in(svc, JobStatus.RECEIVED, job_id_for("uploads", "inbox/a.wav", "7"))
    data, attributes = notification_message(event)
    outcome = handle_dead_letter(svc, names.SUBSCRIPTION_INGEST, data, attributes)
    assert outcome.job_id == job_id
    job = svc.jobs.get_job(job_id)
    assert (job.status, job.error.stage, job.error.code) == (
        JobStatus.FAILED, "ingest", "ingest_failed")


def test_webhook_letters_and_unknown_ones_change_no_job(svc):
    job_id = job_in(svc, JobStatus.TRANSCRIBING)
    kept = handle_dead_letter(svc, names.SUBSCRIPTION_WEBHOOKS, b"{}", {"job_id": job_id})
    assert kept.detail == "webhook letter kept for inspection"
    unknown = handle_dead_letter(svc, "someone-else", b"{}", {"job_id": job_id})
    assert unknown.detail == "unknown subscription 'someone-else'"
    assert svc.jobs.get_job(job_id).status is JobStatus.TRANSCRIBING


@pytest.mark.parametrize(("attributes", "consumer", "expected"), [
    ({"CloudPubSubDeadLetterSourceSubscription": "transcriber"}, None, "transcriber"),
    ({"CloudPubSubDeadLetterSourceSubscription": "projects/p/subscriptions/ingest"}, None,
     "ingest"),
    ({}, "projects/p/subscriptions/deadletters-summarize", "summarize"),
    ({}, None, None),
])
def test_the_source_subscription_comes_from_the_letter_or_its_consumer(
        attributes, consumer, expected):
    assert source_subscription(attributes, consumer) == expected
