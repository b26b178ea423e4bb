"""Producer and consumer spans of Pub/Sub messages, as OpenTelemetry's messaging conventions
name them, on the in-memory publisher (the same path as the Pub/Sub one)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import functions_framework
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from audiary.adapters.memory import MemoryPublisher
from audiary.observability import telemetry
from audiary.observability.messaging import Delivery
from audiary.wire import messages
from tests.spans import finished_spans


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with finished_spans() as exporter:
        yield exporter


def named(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


def test_a_publish_is_a_producer_span_whose_context_the_message_carries(spans):
    publisher = MemoryPublisher()
    with telemetry.tracer().start_as_current_span("handler") as handler:
        message_id = publisher.publish("audio-uploaded", b"12345",
                                       messages.attributes_for("job-1", chunk="0"))
    send = named(spans, "send audio-uploaded")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None
    assert send.parent.span_id == handler.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "gcp_pubsub",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "audio-uploaded",
        "messaging.message.body.size": 5,
        "messaging.message.conversation_id": "job-1",
        "messaging.message.id": message_id,
    }
    [message] = publisher.messages("audio-uploaded")
    ids = send.context
    flags = int(ids.trace_flags)
    assert message.attributes["traceparent"] == (
        f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{flags:02x}")
    assert (message.attributes["job_id"], message.attributes["chunk"]) == ("job-1", "0")


def test_outside_a_trace_a_publish_adds_no_span_and_no_context(spans):
    publisher = MemoryPublisher()
    publisher.publish("job-finished", b"{}", {"reason": "x"})
    assert not spans.get_finished_spans()
    assert publisher.published("job-finished") == [(b"{}", {"reason": "x"})]


def test_a_failed_publish_marks_its_span(spans):
    with telemetry.tracer().start_as_current_span("handler"), pytest.raises(TypeError):
        MemoryPublisher().publish("t", b"x", {"n": 1})  # type: ignore[dict-item]
    send = named(spans, "send t")
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "TypeError"
    assert "messaging.message.id" not in (send.attributes or {})


def envelope(data: bytes, attributes: dict[str, str], **extra: object) -> dict[str, object]:
    return {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes,
                        "messageId": "m-17", "publishTime": "2026-01-01T00:00:00Z"},
            "subscription": "projects/p/subscriptions/summarize", **extra}


def test_a_push_envelope_says_id_subscription_attempt_and_size():
    assert Delivery.of_envelope(envelope(b"abcd", {}, deliveryAttempt=3)) == Delivery(
        message_id="m-17", subscription="summarize", delivery_attempt=3, body_size=4)
    # The emulator and subscriptions without a dead-letter policy send no attempt.
    assert Delivery.of_envelope(envelope(b"", {})).delivery_attempt is None
    assert Delivery.of_envelope({"deliveryAttempt": True}) == Delivery()
    assert Delivery.of_envelope("not an envelope") == Delivery()


def test_a_consumer_span_continues_the_publishers_trace(spans):
    publisher = MemoryPublisher()
    with telemetry.tracer().start_as_current_span("handler"):
        publisher.publish("transcript-ready", b"{}", messages.attributes_for("job-2"))
    send = named(spans, "send transcript-ready")
    [message] = publisher.messages("transcript-ready")
    with telemetry.consuming("tests", "summarize", message.attributes, topic="transcript-ready",
                             published_at=None,
                             delivery=Delivery(message_id=message.message_id, delivery_attempt=4)):
        pass
    process = named(spans, "process transcript-ready")
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert dict(process.attributes or {}) == {
        "messaging.system": "gcp_pubsub",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "transcript-ready",
        "messaging.message.id": message.message_id,
        "messaging.gcp_pubsub.message.delivery_attempt": 4,
        "messaging.message.conversation_id": "job-2",
        "audiary.handler": "summarize",
        "audiary.job_id": "job-2",
    }


FUNCTION = """
from cloudevents.http import CloudEvent

from audiary.observability.http import consuming_event
from audiary.settings import Settings


def handle(cloud_event: CloudEvent) -> None:
    with consuming_event("tests", cloud_event, Settings(), topic="job-finished",
                         handler="webhooks"):
        pass
"""


def test_a_cloud_event_function_reads_the_push_that_functions_framework_converted(
        spans, tmp_path):
    """functions-framework drops the subscription and the delivery attempt from the CloudEvent;
    the consumer span reads them from the push request itself."""
    source = tmp_path / "main.py"
    source.write_text(FUNCTION)
    client = functions_framework.create_app(
        target="handle", source=str(source), signature_type="cloudevent").test_client()
    response = client.post("/", json=envelope(b"hello", messages.attributes_for("job-3"),
                                              deliveryAttempt=2))
    assert response.status_code == 200
    process = named(spans, "process job-finished")
    assert process.kind is SpanKind.CONSUMER
    assert dict(process.attributes or {}).items() >= {
        "messaging.message.id": "m-17",
        "messaging.destination.subscription.name": "summarize",
        "messaging.gcp_pubsub.message.delivery_attempt": 2,
        "messaging.message.body.size": 5,
        "audiary.handler": "webhooks",
    }.items()
