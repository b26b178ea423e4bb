"""Chunk transcription and fan-in on the in-memory adapters, with a stand-in for the model
behind the `Transcriber` port (the real one is tested on real speech in tests/integration)."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import numpy as np
import pytest

from audiary.domain.jobs import Chunk, JobStatus
from audiary.domain.transcript import Segment
from audiary.ports import Transcriber
from audiary.services.ingest import ingest
from audiary.services.progress import AnnouncementPending
from audiary.services.transcription import handle_chunk, job_language
from audiary.settings import Settings
from audiary.wire import messages
from tests.fakes.stores import memory_stores
from tests.media import DEMO_SAMPLE, decode, encode
from tests.unit.test_ingest import drop


class Stub(Transcriber):
    """One segment per call saying how many samples it got; fails while `failing` is set."""

    model_name = "stub"

    def __init__(self) -> None:
        self.calls = 0
        self.failing: Exception | None = None

    def transcribe(self, samples: np.ndarray, *, language: str | None = None,
                   word_timestamps: bool | None = None) -> list[Segment]:
        self.calls += 1
        if self.failing is not None:
            raise self.failing
        return [Segment(start=0.0, end=len(samples) / 16_000, text=f"{len(samples)} samples")]


@pytest.fixture
def svc():
    settings = Settings(blob_backend="memory", job_backend="memory", publisher_backend="memory",
                        chunk_target_s=4.0, chunk_search_s=1.0)
    s = memory_stores(settings)
    for bucket in (settings.uploads_bucket, settings.work_bucket, settings.transcripts_bucket):
        s.blobs.ensure_bucket(bucket)
    return s


@pytest.fixture
def tasks(svc, tmp_path) -> list[messages.ChunkTask]:
    """The chunk messages ingest sent for a 12 s recording (several chunks)."""
    event = drop(svc, encode(decode(DEMO_SAMPLE, seconds=12.0), tmp_path / "a.flac"))
    ingest(svc, event)
    found = [messages.parse_chunk_task(m.data)
             for m in svc.publisher.messages("transcribe-chunk")]
    assert len(found) > 1
    return found


def ready_messages(svc) -> list[dict[str, str]]:
    return [json.loads(m.data) for m in svc.publisher.messages("transcript-ready")]


def test_duplicated_shuffled_chunks_give_one_transcript_and_one_announcement(svc, tasks):
    model = Stub()
    deliveries = [*tasks, *tasks, *tasks]
    random.Random(7).shuffle(deliveries)
    for task in deliveries:
        handle_chunk(svc, model, task)
    job = svc.jobs.get_job(tasks[0].job_id)
    assert job.status is JobStatus.TRANSCRIBED
    assert job.chunks_done == job.chunks_total == len(tasks)
    assert model.calls == len(tasks)  # each chunk decoded once
    assert len(ready_messages(svc)) == 1
    assert handle_chunk(svc, model, tasks[0]).detail == "job is TRANSCRIBED; nothing to do"


def test_a_lost_announcement_is_made_by_the_next_redelivery_and_only_once(svc, tasks):
    model = Stub()
    for task in tasks:
        handle_chunk(svc, model, task)
    svc.jobs.update_job(tasks[0].job_id, {"transcript_announced": False})  # died in between
    with pytest.raises(AnnouncementPending):  # moments later it may still be announcing
        handle_chunk(svc, model, tasks[-1])
    at = svc.jobs.get_job(tasks[0].job_id).timestamps["TRANSCRIBED"]
    svc.jobs.update_job(tasks[0].job_id, {"timestamps.TRANSCRIBED": at - timedelta(seconds=60)})
    again = handle_chunk(svc, model, tasks[-1])
    assert again.detail == "job is TRANSCRIBED; transcript-ready announced again"
    handle_chunk(svc, model, tasks[0])
    assert len(ready_messages(svc)) == 2  # the lost one and the one sent again


def test_a_chunk_failing_every_delivery_fails_the_job_on_the_last_one(svc, tasks):
    model = Stub()
    model.failing = RuntimeError("CUDA out of memory")
    task = tasks[0]
    for _ in range(svc.settings.max_attempts - 1):
        with pytest.raises(RuntimeError):
            handle_chunk(svc, model, task)  # raise: Pub/Sub delivers again
    outcome = handle_chunk(svc, model, task)  # the last delivery: no dead letter needed
    assert outcome.detail == "retries exhausted; job FAILED"
    job = svc.jobs.get_job(task.job_id)
    assert job.status is JobStatus.FAILED
    assert (job.error.code, job.error.stage) == ("transcription_failed", "transcribe")
    assert "CUDA out of memory" in job.error.message
    finished = [json.loads(m.data) for m in svc.publisher.messages("job-finished")]
    assert finished == [{"job_id": task.job_id, "status": "FAILED"}]
    model.failing = None
    for other in tasks:  # later chunks of a failed job do nothing
        assert handle_chunk(svc, model, other).detail == "job is FAILED; nothing to do"
    assert len(svc.publisher.messages("job-finished")) == 1


def test_the_job_s_language_is_the_one_most_of_its_audio_was_decoded_as():
    def chunk(index: int, seconds: float, language: str | None) -> Chunk:
        return Chunk(job_id="j", index=index, start_sample=0, end_sample=int(seconds * 16000),
                     language=language)

    assert job_language([chunk(0, 30, "de"), chunk(1, 300, "en"), chunk(2, 40, "de")]) == "en"
    assert job_language([chunk(0, 30, "de"), chunk(1, 30, "fr")]) == "de"  # a tie: the first
    assert job_language([chunk(0, 30, None), chunk(1, 5, "es")]) == "es"
    assert job_language([chunk(0, 30, None)]) is None


def test_a_chunk_whose_audio_is_gone_fails_the_job_on_its_first_delivery(svc, tasks):
    model = Stub()
    task = tasks[1]
    svc.blobs.delete(task.audio_bucket, task.audio_key)
    outcome = handle_chunk(svc, model, task)  # no later delivery could find it: no retry
    assert outcome.detail == "audio gone; job FAILED"
    job = svc.jobs.get_job(task.job_id)
    assert job.status is JobStatus.FAILED
    assert (job.error.code, job.error.stage) == ("transcription_failed", "transcribe")
    assert f"chunk 1: its audio {task.audio_bucket}/{task.audio_key} is gone" in job.error.message
    assert model.calls == 0
    assert svc.jobs.get_chunks(task.job_id)[1].attempts == 1


def test_pubsub_s_delivery_count_decides_which_delivery_is_the_last(svc, tasks):
    model = Stub()
    model.failing = ConnectionError("the work bucket is unreachable")
    # Earlier deliveries never reached the handler (the service was restarting): Pub/Sub's
    # count says this is its last one, though the chunk has seen only one.
    outcome = handle_chunk(svc, model, tasks[0], delivery_attempt=svc.settings.max_attempts)
    assert outcome.detail == "retries exhausted; job FAILED"
    assert svc.jobs.get_chunks(tasks[0].job_id)[0].attempts == 1
    assert svc.jobs.get_job(tasks[0].job_id).status is JobStatus.FAILED


@pytest.mark.parametrize(("body", "attempt"), [
    ({"message": {}, "deliveryAttempt": 3}, 3), ({"message": {}}, None),
    ({"message": {}, "deliveryAttempt": "3"}, None), ({"deliveryAttempt": 0}, None), ([], None),
])
def test_delivery_attempt_is_read_from_the_push_envelope(body, attempt):
    assert messages.delivery_attempt(body) == attempt


class Unsure(Stub):
    """Every other call gives a segment the decoder was unsure of."""

    def transcribe(self, samples: np.ndarray, *, language=None, word_timestamps=None):
        (segment,) = super().transcribe(samples, language=language)
        return [segment.model_copy(update={"no_speech_prob": 0.9 if self.calls % 2 else 0.1})]


def test_the_job_counts_its_uncertain_segments(svc, tasks):
    model = Unsure()
    for task in tasks:
        handle_chunk(svc, model, task)
    job = svc.jobs.get_job(tasks[0].job_id)
    assert job.uncertain_segments == (len(tasks) + 1) // 2
