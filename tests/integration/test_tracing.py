"""One trace from the bucket drop to the webhooks, and log lines that carry it.

Every hop runs in this process through its real entry point (the watcher, the functions under
functions-framework's test client, the transcriber app with the real Whisper model) on the
in-memory adapters; each message is handed to the next hop exactly as it was published,
attributes included, in a Pub/Sub push envelope like those of a subscription with a dead-letter
policy (which carry `deliveryAttempt`). Each publish is a PRODUCER span `send <topic>` and each
delivery a CONSUMER span `process <topic>` under it (OpenTelemetry's messaging conventions).
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
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from audiary.adapters.memory import PublishedMessage
from audiary.domain.jobs import JobStatus
from audiary.entrypoints.transcriber.app import create_app
from audiary.local.watcher import BucketWatcher
from audiary.observability.logs import SPAN_FIELD, TRACE_FIELD, JsonFormatter
from audiary.ports import Stores
from audiary.settings import Settings
from audiary.wiring import stores
from tests.e2e.conftest import poll
from tests.media import DEMO_SAMPLE, REPO, decode, encode
from tests.spans import finished_spans

pytestmark = pytest.mark.integration

PROJECT = "audiary-trace"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes, from here on (added to the provider `setup` made)."""
    with finished_spans(Settings(project_id=PROJECT)) as spans:
        yield spans


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


ATTEMPT = 2  # as if the first delivery of every message had failed


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
        "deliveryAttempt": ATTEMPT,
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

    def child(parent: ReadableSpan, name: str) -> ReadableSpan:
        [found] = children(parent, name)
        return found

    def hop(parent: ReadableSpan, topic: str, message: PublishedMessage) -> ReadableSpan:
        """The `send` span of `message` under `parent`, and its one `process` span."""
        sends = [span for span in children(parent, f"send {topic}")
                 if span.attributes["messaging.message.id"] == message.message_id]
        assert len(sends) == 1, [span.name for span in spans]
        [send] = sends
        assert send.kind is SpanKind.PRODUCER
        assert dict(send.attributes or {}).items() >= {
            "messaging.system": "gcp_pubsub", "messaging.operation.type": "send",
            "messaging.operation.name": "send", "messaging.destination.name": topic,
            "messaging.message.id": message.message_id,
            "messaging.message.body.size": len(message.data),
        }.items()
        # The message carries the producer span's context, not its caller's.
        assert message.attributes["traceparent"].split("-")[2] == f"{send.context.span_id:016x}"
        process = child(send, f"process {topic}")
        assert process.kind is SpanKind.CONSUMER
        assert dict(process.attributes or {}).items() >= {
            "messaging.system": "gcp_pubsub", "messaging.operation.type": "process",
            "messaging.operation.name": "process", "messaging.destination.name": topic,
            "messaging.destination.subscription.name": "test",
            "messaging.message.id": message.message_id,
            "messaging.gcp_pubsub.message.delivery_attempt": ATTEMPT,
            "messaging.message.body.size": len(message.data),
        }.items()
        return process

    ingest = hop(upload, s.topic_audio_uploaded, notification)
    assert ingest.attributes["audiary.handler"] == "ingest"
    assert len(children(ingest, "decode")) == 1
    chunks = [hop(ingest, s.topic_transcribe_chunk, task) for task in tasks]
    assert sorted(c.attributes["audiary.chunk"] for c in chunks) == list(range(len(tasks)))
    for chunk in chunks:
        assert chunk.attributes["audiary.handler"] == "transcribe chunk"
        assert len(children(chunk, "inference")) == 1
    last = next(c for c in chunks if c.attributes["audiary.chunk"] == len(tasks) - 1)
    summarize = hop(last, s.topic_transcript_ready, ready)
    assert summarize.attributes["audiary.handler"] == "summarize"
    webhooks = hop(summarize, s.topic_job_finished, finished)
    assert webhooks.attributes["audiary.handler"] == "webhooks"
    for span in (ingest, *chunks, summarize):
        assert span.attributes["audiary.job_id"] == job_id
    # Messages published for a job carry its id as correlation id; GCS's notification has none.
    for span in (*chunks, summarize, webhooks):
        assert span.attributes["messaging.message.conversation_id"] == job_id
    assert "messaging.message.conversation_id" not in (ingest.attributes or {})
    consumers = [span for span in spans if span.kind is SpanKind.CONSUMER]
    assert sorted(consumers, key=id) == sorted([ingest, *chunks, summarize, webhooks], key=id)

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
