"""One trace from the bucket drop to the webhooks, and log lines that carry it.

Every hop runs in this process through its real entry point (the watcher, the functions under
functions-framework's test client, the transcriber app with the real Whisper model) on the
in-memory adapters; each message is handed to the next hop exactly as it was published,
attributes included, in a Pub/Sub push envelope.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import functions_framework
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from audiary.adapters.memory import PublishedMessage
from audiary.domain.jobs import JobStatus
from audiary.entrypoints.transcriber.app import create_app
from audiary.local.watcher import BucketWatcher
from audiary.observability import telemetry
from audiary.observability.logs import SPAN_FIELD, TRACE_FIELD, JsonFormatter
from audiary.ports import Stores
from audiary.settings import Settings
from audiary.wiring import stores
from tests.e2e.conftest import poll
from tests.media import DEMO_SAMPLE, REPO, decode, encode

pytestmark = pytest.mark.integration

PROJECT = "audiary-trace"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes, from here on (added to the provider `setup` made)."""
    telemetry.setup("tests", Settings(project_id=PROJECT))
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield spans
    spans.shutdown()


@pytest.fixture
def svc(monkeypatch, tmp_path) -> Stores:
    for port in ("JOB", "BLOB", "PUBLISHER"):
        monkeypatch.setenv(f"AUDIARY_{port}_BACKEND", "memory")
    for name, value in {
        "PROJECT_ID": PROJECT, "CHUNK_TARGET_S": "4", "CHUNK_SEARCH_S": "1",
        "LLM_PROVIDERS": "extractive", "STATE_DIR": str(tmp_path),  # own settings: fresh stores
    }.items():
        monkeypatch.setenv(f"AUDIARY_{name}", value)
    s = stores(Settings())
    for bucket in (s.settings.uploads_bucket, s.settings.work_bucket,
                   s.settings.transcripts_bucket):
        s.blobs.ensure_bucket(bucket)
    return s


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    """JSON log lines of the `audiary` loggers, as the processes write them."""
    captured: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(json.loads(self.format(record)))

    handler = Collect()
    handler.setFormatter(JsonFormatter(PROJECT))
    logger = logging.getLogger("audiary")
    logger.addHandler(handler)
    yield captured
    logger.removeHandler(handler)


def push(client: Any, message: PublishedMessage) -> int:
    """Deliver a published message as a Pub/Sub push subscription would."""
    status: int = client.post("/", json={
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": message.attributes,
            "messageId": message.message_id,
            "publishTime": datetime.now(UTC).isoformat(),
        },
        "subscription": f"projects/{PROJECT}/subscriptions/test",
    }).status_code
    return status


def function_client(name: str) -> Any:
    app = functions_framework.create_app(
        target=name, source=str(REPO / f"functions/{name}/main.py"), signature_type="cloudevent")
    return app.test_client()


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_one_trace_from_the_drop_to_the_webhooks(svc, exporter, lines, tmp_path):
    s = svc.settings
    transcriber = create_app().test_client()  # the real Whisper model, loading meanwhile
    path = encode(decode(DEMO_SAMPLE, seconds=10.0), tmp_path / "drop.flac")
    svc.blobs.upload_file(s.uploads_bucket, f"{s.inbox_prefix}drop.flac", path)
    poll(lambda: transcriber.get("/healthz").status_code, lambda code: code == 200, 120)
    exporter.clear()

    assert len(BucketWatcher(svc).scan()) == 1
    del lines[:]  # the watcher's line is about an object: no job yet
    [notification] = svc.publisher.messages(s.topic_audio_uploaded)
    assert push(function_client("ingest"), notification) == 200
    tasks = svc.publisher.messages(s.topic_transcribe_chunk)
    assert len(tasks) >= 2
    assert [push(transcriber, task) for task in tasks] == [204] * len(tasks)
    [ready] = svc.publisher.messages(s.topic_transcript_ready)
    assert push(function_client("summarize"), ready) == 200
    [finished] = svc.publisher.messages(s.topic_job_finished)
    assert push(function_client("webhooks"), finished) == 200

    job_id = finished.attributes["job_id"]
    assert svc.jobs.get_job(job_id).status is JobStatus.DONE
    spans = list(exporter.get_finished_spans())
    upload = only(spans, "upload")
    assert upload.parent is None
    assert {span.context.trace_id for span in spans} == {upload.context.trace_id}

    def children(parent: ReadableSpan, name: str) -> list[ReadableSpan]:
        return [s for s in spans if s.name == name and s.parent is not None
                and s.parent.span_id == parent.context.span_id]

    ingest = only(spans, "ingest")
    assert children(upload, "ingest") == [ingest]
    assert ingest.kind is SpanKind.CONSUMER
    assert len(children(ingest, "decode")) == 1
    chunks = children(ingest, "transcribe chunk")
    assert sorted(c.attributes["audiary.chunk"] for c in chunks) == list(range(len(tasks)))
    for chunk in chunks:
        assert len(children(chunk, "inference")) == 1
    last = next(c for c in chunks if c.attributes["audiary.chunk"] == len(tasks) - 1)
    summarize = only(spans, "summarize")
    assert children(last, "summarize") == [summarize]
    assert children(summarize, "webhooks") == [only(spans, "webhooks")]
    for span in (ingest, *chunks, summarize):
        assert span.attributes["audiary.job_id"] == job_id

    trace_field = f"projects/{PROJECT}/traces/{upload.context.trace_id:032x}"
    assert len(lines) >= 2 + 2 * len(tasks)  # at least a line per hop and two per chunk
    for line in lines:
        assert line["job_id"] == job_id, line
        assert line["logging.googleapis.com/labels"] == {"job_id": job_id}, line
        assert line[TRACE_FIELD] == trace_field, line
        assert int(line[SPAN_FIELD], 16) in {span.context.span_id for span in spans}, line
    loggers = {line["logger"] for line in lines}
    assert {"audiary.services.ingest", "audiary.entrypoints.transcriber.app",
            "audiary.functions.summarize", "audiary.functions.webhooks"} <= loggers
