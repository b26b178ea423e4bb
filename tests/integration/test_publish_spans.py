"""The Pub/Sub publisher on the emulator: a `send <topic>` span with the id Pub/Sub gave the
message, whose trace context the delivered message carries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from audiary.adapters.pubsub import (
    PubSubPublisher,
    ensure_pull_subscription,
    ensure_topic,
    pull_messages,
)
from audiary.observability import telemetry
from audiary.settings import Settings
from audiary.wire import messages
from tests.integration.conftest import LocalServers
from tests.spans import finished_spans

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with finished_spans() as exporter:
        yield exporter


def test_a_published_message_carries_its_send_span(emulator_env: LocalServers, spans) -> None:
    host = emulator_env.pubsub.address
    project = Settings().project_id
    topic = f"spans-{uuid.uuid4().hex[:12]}"
    ensure_topic(project, topic, emulator_host=host)
    ensure_pull_subscription(project, topic, topic, emulator_host=host)

    with telemetry.tracer().start_as_current_span("handler"):
        message_id = PubSubPublisher(project, emulator_host=host).publish(
            topic, b"hello", messages.attributes_for("job-9"))

    [send] = [s for s in spans.get_finished_spans() if s.name == f"send {topic}"]
    assert send.kind is SpanKind.PRODUCER
    assert send.attributes["messaging.message.id"] == message_id
    assert send.attributes["messaging.destination.name"] == topic
    received: list[tuple[bytes, dict[str, str]]] = []
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        received = pull_messages(project, topic, timeout_s=5, emulator_host=host)
    [(data, attributes)] = received
    assert data == b"hello"
    assert attributes["job_id"] == "job-9"
    assert attributes["traceparent"].split("-")[1:3] == [
        f"{send.context.trace_id:032x}", f"{send.context.span_id:016x}"]
