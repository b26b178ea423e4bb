"""End to end on the native stack: real emulators, real ingest, real transcriber, real Whisper."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from audiary.adapters.pubsub import ensure_pull_subscription, ensure_topic, pull_messages
from audiary.adapters.whisper.engine import WhisperTranscriber
from audiary.domain.jobs import TERMINAL, ChunkStatus, JobStatus, job_id_for
from audiary.domain.layout import transcript_key
from audiary.domain.transcript import Transcript
from audiary.entrypoints.cli.backends import LocalBackend
from audiary.evaluation.longform import build_longform, write_wav
from audiary.evaluation.wer import wer
from audiary.services.ingest import ingest
from audiary.wire.storage_events import ObjectEvent, notification_message
from audiary.wiring import stores
from tests.e2e.conftest import CHUNK_TARGET_S, poll, wait_for_status
from tests.media import DEMO_SAMPLE, bad_inputs, decode, encode
from tests.speech import require_speech

pytestmark = pytest.mark.e2e

FINISHED = TERMINAL


def upload(svc, path):
    """Drop a file like `audiary drop`: (job id, the inbox object)."""
    info = LocalBackend(svc).upload_object(path)
    return job_id_for(info.bucket, info.key, info.generation), info


def transcript_of(svc, job_id: str) -> Transcript:
    raw = svc.blobs.get(svc.settings.transcripts_bucket, transcript_key(job_id))
    return Transcript.model_validate_json(raw)


def test_long_form_speech_is_no_worse_than_raw_faster_whisper(svc, tmp_path):
    require_speech()
    longform = build_longform(150.0, seed=7)
    path = write_wav(tmp_path / "longform.wav", longform.samples)
    job_id, _ = upload(svc, path)
    job = wait_for_status(svc, job_id, FINISHED, timeout_s=600)
    assert job.status is JobStatus.DONE, job.error
    assert job.chunks_total >= longform.samples.size / 16000 / (CHUNK_TARGET_S + 5)
    assert job.chunks_done == job.chunks_total

    transcript = transcript_of(svc, job_id)
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts)
    assert transcript.segments[-1].end <= job.duration_s + 0.5
    assert job.text == transcript.text
    record = svc.notes.get_note(job_id)
    assert record.provider == "openai"
    # The prompt gives times to 0.1 s.
    assert record.note.highlights[0].source.start == pytest.approx(
        transcript.segments[0].start, abs=0.05)
    assert job.cost_usd == pytest.approx(record.cost_usd)
    assert job.cost_per_audio_hour_usd == pytest.approx(record.cost_usd / (job.duration_s / 3600))

    raw = WhisperTranscriber.from_settings(svc.settings)
    sequential = " ".join(s.text for s in raw.transcribe_sequential(longform.samples))
    pipeline_wer = wer([longform.reference], [transcript.text])
    raw_wer = wer([longform.reference], [sequential])
    print(f"WER pipeline {pipeline_wer.wer:.3f}, raw sequential {raw_wer.wer:.3f}")
    assert pipeline_wer.wer <= raw_wer.wer


def test_same_notification_twice_gives_one_job_and_one_transcript(svc, tmp_path):
    path = encode(decode(DEMO_SAMPLE, seconds=25.0), tmp_path / "twice.m4a")
    job_id, info = upload(svc, path)
    wait_for_status(svc, job_id, FINISHED)
    # Settled: DONE, and its job-finished sent (the flag follows the transition).
    first = poll(lambda: svc.jobs.get_job(job_id), lambda j: j is not None and
                 j.finished_announced, 30)
    assert first.status is JobStatus.DONE
    transcript_before = svc.blobs.stat(svc.settings.transcripts_bucket, transcript_key(job_id))

    # Redeliver the very notification GCS (here: the watcher) sent, twice, through Pub/Sub.
    data, attributes = notification_message(
        ObjectEvent(info.bucket, info.key, info.generation, info.size, info.content_type)
    )
    for _ in range(2):
        svc.publisher.publish(svc.settings.topic_audio_uploaded, data, attributes)
    # The ingest log records each redelivery being recognised.
    ingest_log = svc.settings.state_dir / "ingest.log"
    poll(lambda: _duplicates_logged(ingest_log, job_id), lambda n: n >= 2, 60)

    after = svc.jobs.get_job(job_id)
    assert after == first
    assert [j.job_id for j in svc.jobs.list_jobs(500)].count(job_id) == 1
    sources = [j for j in svc.jobs.list_jobs(500) if j.source.name == info.key]
    assert len(sources) == 1
    transcript_after = svc.blobs.stat(svc.settings.transcripts_bucket, transcript_key(job_id))
    assert transcript_after.generation == transcript_before.generation


def _duplicates_logged(log_path, job_id: str) -> int:
    count = 0
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("job_id") == job_id and "duplicate delivery" in entry["message"]:
                count += 1
    return count


def test_chunks_delivered_twice_and_out_of_order_count_once(stack, svc, tmp_path):
    # Ingest for real, but publish the chunk tasks on a held topic so the test delivers them.
    held = "held-chunks"
    pubsub = stack.env["PUBSUB_EMULATOR_HOST"]
    ensure_topic(svc.settings.project_id, held, emulator_host=pubsub)
    ensure_pull_subscription(svc.settings.project_id, held, held, emulator_host=pubsub)
    # A prefix the watcher does not watch, so only this test ingests the file.
    held_svc = stores(
        svc.settings.model_copy(update={
            "topic_transcribe_chunk": held, "inbox_prefix": "held/",
            "chunk_target_s": CHUNK_TARGET_S, "chunk_search_s": 5.0,
        })
    )
    path = encode(decode(DEMO_SAMPLE, seconds=70.0), tmp_path / "ordered.flac")
    key = f"held/{path.name}"
    info = held_svc.blobs.upload_file(held_svc.settings.uploads_bucket, key, path)
    outcome = ingest(held_svc, ObjectEvent(info.bucket, info.key, info.generation, info.size))
    job_id = outcome.job_id
    job = svc.jobs.get_job(job_id)
    assert job.status is JobStatus.QUEUED
    assert job.chunks_total >= 3
    tasks: list[tuple[bytes, dict[str, str]]] = []
    poll(  # a pull may return only some of the waiting messages
        lambda: tasks.extend(pull_messages(svc.settings.project_id, held, emulator_host=pubsub))
        or len(tasks),
        lambda n: n >= job.chunks_total, 30,
    )
    assert sorted(json.loads(data)["index"] for data, _ in tasks) == list(range(job.chunks_total))

    envelopes = [
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": attrs,
                "messageId": f"m{i}",
            },
            "subscription": f"projects/{svc.settings.project_id}/subscriptions/test",
        }
        for i, (data, attrs) in enumerate(tasks)
    ]
    deliveries = list(reversed(envelopes)) * 2  # last chunk first, every chunk twice
    url = f"http://{svc.settings.host}:{stack.settings.transcriber_port}/"
    def deliver(envelope: dict) -> int:
        """As Pub/Sub does: again while the transcriber asks for it (503, Retry-After)."""
        def attempt() -> int:
            answer = client.post(url, json=envelope)
            if answer.status_code == 503:
                assert answer.json()["error"]["code"] == "announcement_pending", answer.text
                assert answer.headers["Retry-After"] == "5"
            return answer.status_code

        return poll(attempt, lambda status: status != 503, 30)

    with httpx.Client(timeout=600) as client, ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(deliver, deliveries))
    assert statuses == [204] * len(deliveries), [
        line[:2000] for line in (stack.state_dir / "transcriber.log").read_text().splitlines()
        if '"ERROR"' in line][-3:]

    job = svc.jobs.get_job(job_id)
    assert job.status in {JobStatus.TRANSCRIBED, JobStatus.SUMMARIZING, JobStatus.DONE}
    assert job.chunks_done == job.chunks_total == len(tasks)
    chunks = svc.jobs.get_chunks(job_id)
    assert all(c.status is ChunkStatus.DONE for c in chunks)
    transcript = transcript_of(svc, job_id)
    assert transcript.text == " ".join(c.text for c in chunks if c.text)
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts)
    assert "sarah" in transcript.text.lower()


@pytest.mark.parametrize("case", ["text renamed .wav", "zero bytes", "truncated wav"])
def test_bad_files_are_rejected_and_kept_and_the_stack_keeps_working(svc, tmp_path, case):
    path, code = bad_inputs(tmp_path)[case]
    job_id, info = upload(svc, path)
    job = wait_for_status(svc, job_id, FINISHED, timeout_s=60)
    assert job.status is JobStatus.REJECTED
    assert job.error.code == code
    bucket, key = job.quarantine_uri.split("/", 1)
    assert svc.blobs.get(bucket, key) == path.read_bytes()
    assert svc.blobs.stat(info.bucket, info.key) is not None

    good = encode(decode(DEMO_SAMPLE, seconds=8.0), tmp_path / "after.mp3")
    good_id, _ = upload(svc, good)
    assert wait_for_status(svc, good_id, FINISHED).status is JobStatus.DONE
