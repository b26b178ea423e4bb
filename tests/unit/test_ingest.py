"""Ingest on the in-memory adapters (the contract suite shows they behave like the real ones)."""

import dataclasses
import json
import wave

import pytest

from audiary.domain.jobs import JobStatus
from audiary.domain.layout import canonical_key
from audiary.services.ingest import ingest
from audiary.settings import Settings
from audiary.wire.storage_events import ObjectEvent
from tests.fakes.stores import memory_stores
from tests.media import DEMO_SAMPLE, FORMATS, bad_inputs, decode, encode


@pytest.fixture
def svc():
    settings = Settings(
        blob_backend="memory", job_backend="memory", publisher_backend="memory",
        chunk_target_s=4.0, chunk_search_s=1.0,
    )
    s = memory_stores(settings)
    for bucket in (settings.uploads_bucket, settings.work_bucket, settings.transcripts_bucket):
        s.blobs.ensure_bucket(bucket)
    return s


def drop(svc, path, name=None):
    info = svc.blobs.upload_file(
        svc.settings.uploads_bucket, f"inbox/{name or path.name}", path, content_type="x/y"
    )
    return ObjectEvent(info.bucket, info.key, info.generation, info.size, info.content_type)


@pytest.fixture(scope="module")
def speech():
    return decode(DEMO_SAMPLE, seconds=12.0)


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_every_format_becomes_canonical_16k_mono(svc, tmp_path, speech, suffix):
    event = drop(svc, encode(speech, tmp_path / f"speech.{suffix}"))
    outcome = ingest(svc, event)
    assert outcome.status is JobStatus.QUEUED
    job = svc.jobs.get_job(outcome.job_id)
    assert job.status is JobStatus.QUEUED
    assert job.duration_s == pytest.approx(12.0, abs=0.1)

    canonical = tmp_path / "canonical.wav"
    svc.blobs.download_file(svc.settings.work_bucket, canonical_key(job.job_id), canonical)
    with wave.open(str(canonical)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.getnframes() == pytest.approx(12 * 16000, abs=1600)

    chunks = svc.jobs.get_chunks(job.job_id)
    assert job.chunks_total == len(chunks) >= 2
    tasks = [json.loads(m.data) for m in svc.publisher.messages("transcribe-chunk")]
    assert [t["index"] for t in tasks] == list(range(len(chunks)))
    assert tasks[-1]["end_sample"] == sum(c.end_sample - c.start_sample for c in chunks)
    messages = svc.publisher.messages("transcribe-chunk")
    assert all(m.attributes["job_id"] == job.job_id for m in messages)


def test_second_delivery_changes_nothing(svc, tmp_path, speech):
    event = drop(svc, encode(speech, tmp_path / "a.flac"))
    first = ingest(svc, event)
    before = svc.jobs.get_job(first.job_id)
    published = len(svc.publisher.messages("transcribe-chunk"))

    again = ingest(svc, event)
    assert again.job_id == first.job_id
    assert again.detail == "duplicate delivery"
    assert svc.jobs.get_job(first.job_id) == before
    assert len(svc.publisher.messages("transcribe-chunk")) == published
    assert len(svc.jobs.list_jobs()) == 1


def test_new_generation_is_a_new_job(svc, tmp_path, speech):
    path = encode(speech, tmp_path / "a.flac")
    first = ingest(svc, drop(svc, path, "same.flac"))
    second = ingest(svc, drop(svc, path, "same.flac"))
    assert first.job_id != second.job_id
    assert second.status is JobStatus.QUEUED


def test_objects_outside_the_inbox_are_ignored(svc, tmp_path, speech):
    path = encode(speech, tmp_path / "a.flac")
    info = svc.blobs.upload_file(svc.settings.uploads_bucket, "quarantine/x/a.flac", path)
    outcome = ingest(svc, ObjectEvent(info.bucket, info.key, info.generation))
    assert outcome.job_id is None
    assert svc.jobs.list_jobs() == []


@pytest.mark.parametrize(
    "case", ["text renamed .wav", "zero bytes", "truncated wav", "silence", "video without audio"]
)
def test_bad_input_is_rejected_with_a_reason_and_kept(svc, tmp_path, case):
    path, code = bad_inputs(tmp_path)[case]
    event = drop(svc, path)
    outcome = ingest(svc, event)
    job = svc.jobs.get_job(outcome.job_id)
    assert job.status is JobStatus.REJECTED
    assert job.error.code == code
    assert job.error.stage == "ingest"
    assert len(job.error.message) > 20
    bucket, key = job.quarantine_uri.split("/", 1)
    assert key.startswith("quarantine/")
    assert svc.blobs.get(bucket, key) == path.read_bytes()
    assert svc.blobs.get(bucket, event.name) == path.read_bytes()  # the original stays too
    assert svc.publisher.messages("transcribe-chunk") == []
    assert ingest(svc, event).status is JobStatus.REJECTED  # and stays rejected


def test_size_and_duration_caps(svc, tmp_path, speech):
    small = svc.settings.model_copy(update={"max_upload_bytes": 1000})
    capped = dataclasses.replace(svc, settings=small)
    outcome = ingest(capped, drop(svc, encode(speech, tmp_path / "a.flac")))
    assert svc.jobs.get_job(outcome.job_id).error.code == "too_large"

    short = svc.settings.model_copy(update={"max_duration_s": 5.0})
    capped = dataclasses.replace(svc, settings=short)
    outcome = ingest(capped, drop(svc, encode(speech, tmp_path / "b.mp3")))
    job = svc.jobs.get_job(outcome.job_id)
    assert job.error.code == "too_long"
    assert "limit is" in job.error.message


def test_object_replaced_before_ingest(svc, tmp_path, speech):
    path = encode(speech, tmp_path / "a.flac")
    stale = drop(svc, path, "x.flac")
    drop(svc, path, "x.flac")
    outcome = ingest(svc, stale)
    assert svc.jobs.get_job(outcome.job_id).error.code == "source_replaced"


def test_queued_before_any_chunk_message_and_interrupted_fan_out_is_finished(svc, tmp_path,
                                                                            speech):
    statuses_seen = []
    publish = svc.publisher.publish

    def watching(topic, data, attributes=None):
        statuses_seen.append(svc.jobs.get_job(attributes["job_id"]).status)
        if len(statuses_seen) == 2:
            raise ConnectionError("the publisher went away mid fan-out")
        return publish(topic, data, attributes)

    svc.publisher.publish = watching
    event = drop(svc, encode(speech, tmp_path / "a.flac"))
    with pytest.raises(ConnectionError):
        ingest(svc, event)
    assert statuses_seen == [JobStatus.QUEUED, JobStatus.QUEUED]
    (job,) = svc.jobs.list_jobs()
    assert job.status is JobStatus.QUEUED
    assert not job.chunks_published

    svc.publisher.publish = publish
    again = ingest(svc, event)  # the redelivery Pub/Sub makes after the failure
    assert again.detail == "fan-out finished"
    job = svc.jobs.get_job(again.job_id)
    assert job.chunks_published
    sent = [json.loads(m.data)["index"] for m in svc.publisher.messages("transcribe-chunk")]
    # Chunk 0 went out before the failure and again after it: every chunk at least once.
    assert sent == [0, *range(job.chunks_total)]
    assert ingest(svc, event).detail == "duplicate delivery"


def test_an_interrupted_fan_out_is_finished_after_a_chunk_moved_the_job_on(svc, tmp_path,
                                                                           speech):
    publish = svc.publisher.publish
    sent = []

    def failing_after_one(topic, data, attributes=None):
        if sent:
            raise ConnectionError("the publisher went away mid fan-out")
        sent.append(json.loads(data)["index"])
        return publish(topic, data, attributes)

    svc.publisher.publish = failing_after_one
    event = drop(svc, encode(speech, tmp_path / "a.flac"))
    with pytest.raises(ConnectionError):
        ingest(svc, event)
    (job,) = svc.jobs.list_jobs()
    svc.jobs.advance(job.job_id, JobStatus.TRANSCRIBING)  # chunk 0 reached the transcriber
    svc.publisher.publish = publish
    again = ingest(svc, event)
    assert again.detail == "fan-out finished"
    indexes = [json.loads(m.data)["index"] for m in svc.publisher.messages("transcribe-chunk")]
    assert job.chunks_total > 1
    assert set(indexes) == set(range(job.chunks_total))
    assert svc.jobs.get_job(job.job_id).chunks_published


def test_a_failure_on_the_last_attempt_ends_the_job_and_announces_it(svc, tmp_path, speech):
    event = drop(svc, encode(speech, tmp_path / "a.flac"))
    download = svc.blobs.download_file

    def broken(*args, **kwargs):
        raise OSError("disk full")

    svc.blobs.download_file = broken
    for _ in range(svc.settings.max_attempts - 1):
        with pytest.raises(OSError, match="disk full"):
            ingest(svc, event)  # raise: Pub/Sub delivers again
    outcome = ingest(svc, event)  # the last delivery Pub/Sub makes
    svc.blobs.download_file = download
    job = svc.jobs.get_job(outcome.job_id)
    assert job.status is JobStatus.FAILED
    assert (job.error.code, job.error.stage) == ("ingest_failed", "ingest")
    assert "disk full" in job.error.message
    finished = [json.loads(m.data) for m in svc.publisher.messages("job-finished")]
    assert finished == [{"job_id": job.job_id, "status": "FAILED"}]
    assert ingest(svc, event).detail == "duplicate delivery"
    assert len(svc.publisher.messages("job-finished")) == 1


def test_a_rejected_job_is_announced_once(svc, tmp_path):
    path, _ = bad_inputs(tmp_path)["zero bytes"]
    event = drop(svc, path)
    ingest(svc, event)
    ingest(svc, event)
    finished = [json.loads(m.data)["status"] for m in svc.publisher.messages("job-finished")]
    assert finished == ["REJECTED"]
