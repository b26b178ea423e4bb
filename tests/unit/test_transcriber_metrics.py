"""The transcriber's /metrics after real requests through its app: requests by route and
status, inference and audio seconds, stage timings, queue lag, retried chunks, readiness."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from audiary.domain.transcript import Segment
from audiary.entrypoints.transcriber.app import create_app
from audiary.ports import Stores, Transcriber
from audiary.services.ingest import ingest
from audiary.settings import Settings
from audiary.wire.storage_events import ObjectEvent
from audiary.wiring import stores
from tests.e2e.conftest import poll
from tests.media import DEMO_SAMPLE, decode, encode
from tests.promtext import sample


class FlakyModel(Transcriber):
    """Fails its first call, as a GPU that runs out of memory once would."""

    model_name = "fake-tiny"
    device = "cpu"

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, samples, *, language=None):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("out of memory")
        return [Segment(start=0.0, end=len(samples) / 16000, text=" some words")]


@pytest.fixture
def svc(monkeypatch, tmp_path) -> Stores:
    for port in ("JOB", "BLOB", "PUBLISHER"):
        monkeypatch.setenv(f"AUDIARY_{port}_BACKEND", "memory")
    monkeypatch.setenv("AUDIARY_CHUNK_TARGET_S", "4")
    monkeypatch.setenv("AUDIARY_CHUNK_SEARCH_S", "1")
    monkeypatch.setenv("AUDIARY_STATE_DIR", str(tmp_path))  # settings of its own: fresh stores
    s = stores(Settings())
    for bucket in (s.settings.uploads_bucket, s.settings.work_bucket,
                   s.settings.transcripts_bucket):
        s.blobs.ensure_bucket(bucket)
    return s


def envelope(data: bytes, attributes: dict[str, str], published: datetime) -> dict[str, object]:
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": "m",
            "publishTime": published.isoformat().replace("+00:00", "Z"),
        },
        "subscription": "projects/p/subscriptions/transcriber",
    }


def test_metrics_count_what_the_transcriber_did(svc, tmp_path):
    path = encode(decode(DEMO_SAMPLE, seconds=10.0), tmp_path / "talk.flac")
    info = svc.blobs.upload_file(svc.settings.uploads_bucket, "inbox/talk.flac", path)
    job_id = ingest(svc, ObjectEvent(info.bucket, info.key, info.generation)).job_id
    job = svc.jobs.get_job(job_id)
    tasks = svc.publisher.messages(svc.settings.topic_transcribe_chunk)
    assert len(tasks) == job.chunks_total >= 2

    client = create_app(FlakyModel).test_client()
    poll(lambda: client.get("/healthz").status_code, lambda code: code == 200, 10)
    before = client.get("/metrics").text
    published = datetime.now(UTC) - timedelta(seconds=3)
    statuses = [  # the first delivery fails; Pub/Sub redelivers it
        client.post("/", json=envelope(task.data, task.attributes, published)).status_code
        for task in [tasks[0], *tasks]
    ]
    assert statuses == [500] + [204] * len(tasks)
    assert client.post("/", data=b"{", content_type="application/json").status_code == 400
    scrape = client.get("/metrics")
    after = scrape.text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert scrape.status_code == 200
    assert scrape.mimetype == "text/plain"
    push = {"service": "transcriber", "route": "/", "method": "POST"}
    assert delta("audiary_http_requests_total", **push, status="204") == len(tasks)
    assert delta("audiary_http_requests_total", **push, status="500") == 1
    assert delta("audiary_http_requests_total", **push, status="400") == 1
    assert delta("audiary_http_request_duration_seconds_count", service="transcriber",
                 route="/") == len(tasks) + 2
    assert delta("audiary_http_requests_total", route="/metrics") == 0  # scrapes are not counted
    model = {"model": "fake-tiny", "device": "cpu"}
    # The failed attempt counts no audio: the real-time factor is of work done.
    assert delta("audiary_audio_seconds_total", **model) == pytest.approx(job.duration_s)
    assert delta("audiary_inference_seconds_total", **model) > 0
    assert delta("audiary_chunks_retried_total") == 1
    lag = {"topic": svc.settings.topic_transcribe_chunk, "service": "transcriber"}
    assert delta("audiary_queue_lag_seconds_count", **lag) == len(tasks) + 1
    assert delta("audiary_queue_lag_seconds_sum", **lag) >= 3 * (len(tasks) + 1)
    # The first chunk moved the job out of QUEUED, the last one out of TRANSCRIBING.
    for stage in ("QUEUED", "TRANSCRIBING"):
        assert delta("audiary_job_stage_seconds_count", stage=stage) == 1
    assert sample(after, "audiary_service_up", service="transcriber") == 1

