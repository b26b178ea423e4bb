"""Log correlation, trace context in messages, the watcher's metrics and the stack's scrape
targets, without any server but the metrics one."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import REGISTRY

from audiary.domain.jobs import Job, JobStatus, SourceObject
from audiary.local.emulators import free_port
from audiary.local.stack import NativeStack, prometheus_config
from audiary.local.watcher import BucketWatcher
from audiary.observability import metrics, telemetry
from audiary.observability.logs import JOB_ID, JsonFormatter, bind_job, job_context
from audiary.ports import Stores
from audiary.settings import Settings
from audiary.wire import messages
from tests.fakes.stores import memory_stores


@pytest.fixture(autouse=True)
def _tracing() -> None:
    telemetry.setup("tests", Settings())  # once per process: the SDK tracer provider


def line(formatter: JsonFormatter, message: str, **extra: object) -> dict[str, object]:
    record = logging.makeLogRecord({"name": "audiary.x", "levelname": "INFO", "msg": message,
                                    **extra})
    entry: dict[str, object] = json.loads(formatter.format(record))
    return entry


def test_log_lines_carry_the_job_and_the_active_span():
    formatter = JsonFormatter("my-project")
    assert "job_id" not in line(formatter, "idle")
    with telemetry.tracer().start_as_current_span("work") as span, job_context("job-7"):
        entry = line(formatter, "busy")
        explicit = line(formatter, "other", job_id="job-8")
    ids = span.get_span_context()
    assert entry["job_id"] == "job-7"
    assert entry["logging.googleapis.com/labels"] == {"job_id": "job-7"}
    trace_name = f"projects/my-project/traces/{ids.trace_id:032x}"
    assert entry["logging.googleapis.com/trace"] == trace_name
    assert entry["logging.googleapis.com/spanId"] == f"{ids.span_id:016x}"
    assert entry["logging.googleapis.com/trace_sampled"] is True
    assert explicit["job_id"] == "job-8"  # an explicit job id wins
    assert JOB_ID.get() is None
    assert "logging.googleapis.com/trace" not in line(formatter, "after")


def test_bind_job_lasts_until_its_scope_resets():
    token = JOB_ID.set(None)
    bind_job("job-9")
    assert JOB_ID.get() == "job-9"
    JOB_ID.reset(token)
    assert JOB_ID.get() is None


def test_attributes_carry_the_trace_context_of_the_publisher():
    assert set(messages.attributes_for("job-1")) == {"job_id", "correlation_id"}
    with telemetry.tracer().start_as_current_span("publisher") as span:
        attributes = messages.attributes_for("job-1", chunk="3")
    ids = span.get_span_context()
    flags = int(ids.trace_flags)
    assert attributes["traceparent"] == f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{flags:02x}"
    assert attributes["chunk"] == "3"

    with telemetry.consuming("tests", "handle", attributes, topic="t",
                             published_at=None) as handling:
        assert JOB_ID.get() == "job-1"
    assert handling.get_span_context().trace_id == ids.trace_id
    assert handling.parent is not None
    assert handling.parent.span_id == ids.span_id


def test_publish_time_of_a_push_envelope():
    body = {"message": {"publishTime": "2026-11-21T18:10:28.933123456Z"}}
    assert messages.publish_time(body) == datetime(2026, 11, 21, 18, 10, 28, 933123, UTC)
    assert messages.publish_time({"message": {}}) is None
    assert messages.parse_time("yesterday") is None


@pytest.fixture
def svc() -> Stores:
    settings = Settings(blob_backend="memory", job_backend="memory", publisher_backend="memory")
    s = memory_stores(settings)
    s.blobs.ensure_bucket(settings.uploads_bucket)
    return s


def test_the_watcher_starts_the_trace_and_counts_jobs_per_state(svc):
    s = svc.settings
    svc.blobs.put(s.uploads_bucket, f"{s.inbox_prefix}a.ogg", b"x")
    assert trace.get_current_span().get_span_context().is_valid is False
    watcher = BucketWatcher(svc)
    watcher.scan()
    [message] = svc.publisher.messages(s.topic_audio_uploaded)
    assert message.attributes["eventType"] == "OBJECT_FINALIZE"
    assert message.attributes["traceparent"].startswith("00-")

    for i, status in enumerate((JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.DONE)):
        job, _ = svc.jobs.create_job(Job(job_id=f"j{i}", source=SourceObject(
            bucket="b", name=f"n{i}", generation="1")))
        svc.jobs.advance(job.job_id, status)
    watcher.refresh_stats(("ingest-dead-letter",))  # memory backends: no dead letters to count

    def jobs_in(status: str) -> float | None:
        return REGISTRY.get_sample_value("audiary_jobs_in_state", {"status": status})

    assert (jobs_in("QUEUED"), jobs_in("DONE"), jobs_in("FAILED")) == (2, 1, 0)


def test_the_stack_records_a_scrape_target_per_process(tmp_path):
    settings = Settings(state_dir=tmp_path, transcriber_port=1001, api_port=1002,
                        ingest_metrics_port=2001, summarize_metrics_port=2002,
                        webhooks_metrics_port=2003, watcher_metrics_port=2004,
                        deadletters_metrics_port=2005, sweeper_metrics_port=2006,
                        review_metrics_port=2007, learning_metrics_port=2008)
    targets = NativeStack(settings).metrics_targets
    assert targets == {
        "transcriber": "127.0.0.1:1001", "ingest": "127.0.0.1:2001",
        "summarize": "127.0.0.1:2002", "api": "127.0.0.1:1002",
        "webhooks": "127.0.0.1:2003", "deadletters": "127.0.0.1:2005",
        "sweeper": "127.0.0.1:2006", "review": "127.0.0.1:2007",
        "learning": "127.0.0.1:2008", "watcher": "127.0.0.1:2004",
    }
    config = json.loads(prometheus_config(targets, scrape_interval_s=1))
    assert config["global"]["scrape_interval"] == "1s"
    assert {job["job_name"]: job["static_configs"][0]["targets"]
            for job in config["scrape_configs"]} == {k: [v] for k, v in targets.items()}


def test_metrics_server_serves_the_registry():
    metrics.SERVICE_UP.labels(service="tests").set(1)
    port = free_port()
    server = telemetry.serve_metrics(port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    assert 'audiary_service_up{service="tests"} 1.0' in text


def test_otlp_exporter_posts_spans_to_the_configured_collector():
    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        exporter = telemetry.span_exporter(Settings(otel_exporter="otlp",
                                                    otel_endpoint=endpoint))
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("tests").start_as_current_span("exported-span"):
            pass
        provider.shutdown()
    finally:
        server.shutdown()
    [(path, content_type, body)] = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    assert b"exported-span" in body
    assert telemetry.span_exporter(Settings()) is None
