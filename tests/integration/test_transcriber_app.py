"""The transcriber service over HTTP: health while loading, push envelope checks, draining."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from audiary.adapters.memory import MemoryPublisher
from audiary.adapters.pubsub import ensure_topic
from audiary.domain.jobs import ChunkStatus, JobStatus
from audiary.entrypoints.transcriber.app import create_app
from audiary.local.emulators import free_port
from audiary.local.stack import transcriber_process
from audiary.ports import Transcriber
from audiary.services.ingest import ingest
from audiary.settings import Settings
from audiary.wire.storage_events import ObjectEvent
from audiary.wiring import stores
from tests.e2e.conftest import poll
from tests.media import DEMO_SAMPLE, decode, encode
from tests.paths import REPO_ROOT


def envelope(data: bytes, **attributes: str) -> dict[str, object]:
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": "1",
        },
        "subscription": "projects/p/subscriptions/transcriber",
    }


@pytest.fixture
def memory_backends(monkeypatch):
    for port in ("JOB", "BLOB", "PUBLISHER"):
        monkeypatch.setenv(f"AUDIARY_{port}_BACKEND", "memory")


class SlowModel(Transcriber):
    model_name = "never-used"

    def transcribe(self, samples, *, language=None):
        raise AssertionError("not called in these tests")


@pytest.mark.usefixtures("memory_backends")
def test_healthz_answers_ready_only_once_the_model_is_loaded():
    release = threading.Event()

    def load():
        release.wait(10)
        return SlowModel()

    client = create_app(load).test_client()
    loading = client.get("/healthz")
    assert (loading.status_code, loading.json["status"]) == (503, "loading")
    release.set()
    ready = poll(lambda: client.get("/healthz"), lambda r: r.status_code == 200, 10)
    assert ready.json == {"status": "ok", "model": "never-used"}


@pytest.mark.usefixtures("memory_backends")
def test_model_that_fails_to_load_is_reported():

    def load():
        raise FileNotFoundError("no model at /nowhere")

    client = create_app(load).test_client()
    response = poll(lambda: client.get("/healthz"), lambda r: r.json["status"] != "loading", 10)
    assert response.status_code == 503
    assert "no model at /nowhere" in response.json["error"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (None, "not a JSON object"),
        ({"subscription": "s"}, "no 'message'"),
        ({"message": {"data": "***"}}, "not valid base64"),
        ({"message": {"data": 5}}, "not a base64 string"),
        (envelope(b"not json"), "not a chunk task"),
        (envelope(json.dumps({"job_id": "j"}).encode()), "not a chunk task"),
    ],
)
@pytest.mark.usefixtures("memory_backends")
def test_malformed_push_gets_400_with_the_reason(body, needle):
    client = create_app(SlowModel).test_client()
    response = client.post("/", data=b"{" if body is None else json.dumps(body),
                           content_type="application/json")
    assert response.status_code == 400
    error = response.json["error"]  # the OpenAI error shape, as on every route
    assert (error["type"], error["code"]) == ("invalid_request_error", "bad_push")
    assert needle in error["message"]


@pytest.mark.usefixtures("memory_backends")
def test_task_for_an_unknown_job_is_acknowledged_not_retried():
    client = create_app(SlowModel).test_client()
    task = {"job_id": "gone", "index": 0, "start_sample": 0, "end_sample": 16000,
            "audio_bucket": "w", "audio_key": "k"}
    assert client.post("/", json=envelope(json.dumps(task).encode())).status_code == 204


class HeldModel(Transcriber):
    """Transcribes only when released, so a test can stop the process mid-chunk."""

    model_name = "held"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def transcribe(self, samples, *, language=None):
        self.entered.set()
        assert self.release.wait(30)
        return []


def chunk_job(job_id: str = "drain-1"):
    """A QUEUED job with one chunk whose audio (1 s of silence) is in the work bucket."""
    from audiary.domain.audio import sample_range_bytes
    from audiary.domain.jobs import Chunk, SourceObject, new_job
    from audiary.domain.layout import canonical_key

    settings = Settings()
    svc = stores(settings)
    svc.jobs.create_job(new_job(job_id, SourceObject(bucket="u", name="inbox/a.wav",
                                                     generation="1")))
    svc.jobs.put_chunks(job_id, [Chunk(job_id=job_id, index=0, start_sample=0,
                                       end_sample=16_000)])
    svc.jobs.advance(job_id, JobStatus.QUEUED)
    _, end = sample_range_bytes(0, 16_000)
    for bucket in (settings.work_bucket, settings.transcripts_bucket):
        svc.blobs.ensure_bucket(bucket)
    svc.blobs.put(settings.work_bucket, canonical_key(job_id), b"\0" * end)
    task = {"job_id": job_id, "index": 0, "start_sample": 0, "end_sample": 16_000,
            "audio_bucket": settings.work_bucket, "audio_key": canonical_key(job_id)}
    return svc, json.dumps(task).encode()


@pytest.mark.usefixtures("memory_backends")
def test_a_chunk_not_done_within_the_grace_time_is_handed_back_uncounted(monkeypatch):
    from audiary.entrypoints.transcriber.drain import Drain

    monkeypatch.setenv("AUDIARY_SHUTDOWN_GRACE_S", "0.3")
    svc, task = chunk_job()
    model, drain = HeldModel(), Drain()
    client = create_app(lambda: model, drain).test_client()
    poll(lambda: client.get("/healthz").status_code, lambda c: c == 200, 10)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/", json=envelope(task, deliveryAttempt="1"))
        assert model.entered.wait(10)
        assert svc.jobs.get_chunks("drain-1")[0].attempts == 1
        drain.begin()  # what SIGTERM does
        response = pending.result(timeout=10)
    model.release.set()
    assert response.status_code == 204  # acknowledged: Pub/Sub counts no failed delivery
    (again,) = svc.publisher.messages(svc.settings.topic_transcribe_chunk)
    assert json.loads(again.data) == json.loads(task)  # the same task, as a new message
    assert again.attributes["chunk"] == "0"
    chunk = svc.jobs.get_chunks("drain-1")[0]
    assert (chunk.status, chunk.attempts) == (ChunkStatus.PENDING, 0)  # the attempt taken back
    # While draining, a new push is handed back at once, without starting the chunk.
    assert client.post("/", json=envelope(task)).status_code == 204
    assert len(svc.publisher.messages(svc.settings.topic_transcribe_chunk)) == 2
    assert svc.jobs.get_chunks("drain-1")[0].attempts == 0


@pytest.mark.usefixtures("memory_backends")
def test_a_chunk_done_within_the_grace_time_is_stored_not_handed_back(monkeypatch):
    from audiary.entrypoints.transcriber.drain import Drain

    monkeypatch.setenv("AUDIARY_SHUTDOWN_GRACE_S", "30")
    svc, task = chunk_job("drain-2")
    model, drain = HeldModel(), Drain()
    client = create_app(lambda: model, drain).test_client()
    poll(lambda: client.get("/healthz").status_code, lambda c: c == 200, 10)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/", json=envelope(task))
        assert model.entered.wait(10)
        drain.begin()
        model.release.set()  # finishes well within the grace time
        assert pending.result(timeout=10).status_code == 204
    assert svc.jobs.get_chunks("drain-2")[0].status is ChunkStatus.DONE
    assert svc.jobs.get_job("drain-2").status is JobStatus.TRANSCRIBED
    assert svc.publisher.messages(svc.settings.topic_transcribe_chunk) == []


@pytest.mark.integration
def test_sigterm_lets_the_request_in_flight_finish(emulator_env, tmp_path):
    """Cloud Run sends SIGTERM on scale-in: the chunk being transcribed is still stored."""
    settings = Settings(chunk_target_s=20.0, chunk_search_s=5.0)
    real = stores(settings)
    for bucket in (settings.uploads_bucket, settings.work_bucket, settings.transcripts_bucket):
        real.blobs.ensure_bucket(bucket)
    ensure_topic(settings.project_id, settings.topic_transcript_ready,
                 emulator_host=settings.pubsub_emulator_host)
    held = MemoryPublisher()
    svc = dataclasses.replace(real, publisher=held)
    path = encode(decode(DEMO_SAMPLE, seconds=60.0), tmp_path / "drain.flac")
    info = real.blobs.upload_file(settings.uploads_bucket, "inbox/drain.flac", path)
    job_id = ingest(svc, ObjectEvent(info.bucket, info.key, info.generation)).job_id
    first_task = held.messages(settings.topic_transcribe_chunk)[0].data

    port = free_port()
    server = transcriber_process(REPO_ROOT, port, tmp_path / "transcriber.log",
                                 {**emulator_env.env, "AUDIARY_STATE_DIR": str(tmp_path)})
    with server.start(), ThreadPoolExecutor(1) as pool:
        server.wait_ready(120)
        pending = pool.submit(httpx.post, f"http://127.0.0.1:{port}/",
                              json=envelope(first_task), timeout=300)
        poll(lambda: real.jobs.get_chunks(job_id)[0].attempts, lambda n: n >= 1, 60)
        os.kill(server.pid, signal.SIGTERM)  # to the server process only, as Cloud Run does
        response = pending.result(timeout=300)
        # Cloud Run kills the instance 10 s after SIGTERM: it must be gone by then.
        exit_code = server._proc.wait(timeout=10)

    assert response.status_code == 204
    chunk = real.jobs.get_chunks(job_id)[0]
    assert chunk.status is ChunkStatus.DONE
    assert chunk.text
    assert exit_code == 0
    assert "Shutting down" in (tmp_path / "transcriber.log").read_text()


@pytest.mark.usefixtures("memory_backends")
def test_a_duplicate_that_meets_the_announcement_is_asked_to_come_again():
    svc, task = chunk_job("announce-1")
    model = HeldModel()
    model.release.set()
    client = create_app(lambda: model).test_client()
    poll(lambda: client.get("/healthz").status_code, lambda c: c == 200, 10)
    assert client.post("/", json=envelope(task)).status_code == 204
    assert svc.jobs.get_job("announce-1").status is JobStatus.TRANSCRIBED
    # As if that delivery were still publishing transcript-ready: the same chunk again is not
    # an error, but not acknowledged either, so Pub/Sub brings it back (and it announces, if
    # the first delivery died meanwhile).
    svc.jobs.update_job("announce-1", {"transcript_announced": False})
    again = client.post("/", json=envelope(task))
    assert again.status_code == 503
    assert again.headers["Retry-After"] == "5"
    error = again.json["error"]
    assert (error["type"], error["code"]) == ("server_error", "announcement_pending")
    assert "announcing transcript-ready" in error["message"]
    assert svc.jobs.get_job("announce-1").chunks_done == 1  # counted once
