"""Pub/Sub spans as OpenTelemetry's messaging conventions name them (semconv messaging and
gcp-pubsub): a PRODUCER span `send <topic>` around each publish, a CONSUMER span
`process <topic>` around each delivery.

The message carries the producer span's trace context in its attributes, so every consumer
span is a child of the `send` span that published its message. A publish outside any trace (a
script, a test) starts no trace and adds nothing to the attributes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.semconv._incubating.attributes import messaging_attributes as semconv
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

__all__ = ["PUSHED", "Delivery", "consumer_attributes", "send", "span_name"]

SYSTEM = semconv.MessagingSystemValues.GCP_PUBSUB.value
SEND = semconv.MessagingOperationTypeValues.SEND.value
PROCESS = semconv.MessagingOperationTypeValues.PROCESS.value
# The job id travels as `correlation_id` (wire.messages.attributes_for).
CORRELATION_ATTRIBUTE = "correlation_id"


def send(topic: str, data: bytes, attributes: Mapping[str, str] | None,
         publish: Callable[[dict[str, str]], str]) -> str:
    """Publish through `publish(attributes)` in a PRODUCER span `send <topic>`; returns the
    message id, which the span records.

    The attributes given get the producer span's trace context (replacing the caller's), so
    the consumer continues from this span.
    """
    attrs = dict(attributes or {})
    if not trace.get_current_span().get_span_context().is_valid:
        return publish(attrs)
    span_attributes: dict[str, AttributeValue] = {
        semconv.MESSAGING_SYSTEM: SYSTEM,
        semconv.MESSAGING_OPERATION_TYPE: SEND,
        semconv.MESSAGING_OPERATION_NAME: SEND,
        semconv.MESSAGING_DESTINATION_NAME: topic,
        semconv.MESSAGING_MESSAGE_BODY_SIZE: len(data),
    }
    if correlation := attrs.get(CORRELATION_ATTRIBUTE):
        span_attributes[semconv.MESSAGING_MESSAGE_CONVERSATION_ID] = correlation
    tracer = trace.get_tracer("audiary")
    with tracer.start_as_current_span(span_name(SEND, topic), kind=SpanKind.PRODUCER,
                                      attributes=span_attributes) as span:
        propagate.inject(attrs)
        try:
            message_id = publish(attrs)
        except Exception as exc:
            span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
            raise
        span.set_attribute(semconv.MESSAGING_MESSAGE_ID, message_id)
        return message_id


@dataclass(frozen=True)
class Delivery:
    """What a push delivery says of its message beyond data and attributes."""

    message_id: str | None = None
    subscription: str | None = None
    delivery_attempt: int | None = None
    body_size: int | None = None

    @classmethod
    def of_envelope(cls, body: Any) -> Delivery:
        """Read a Pub/Sub push envelope (`{"message": {...}, "subscription": ...,
        "deliveryAttempt": n}`); whatever it lacks stays None."""
        if not isinstance(body, Mapping):
            return cls()
        message = body.get("message")
        message = message if isinstance(message, Mapping) else {}
        message_id = message.get("messageId") or message.get("message_id")
        subscription = body.get("subscription")
        attempt = body.get("deliveryAttempt")
        return cls(
            message_id=message_id if isinstance(message_id, str) and message_id else None,
            # projects/<project>/subscriptions/<name>: the name is what the stack calls it
            subscription=(subscription.rsplit("/", 1)[-1]
                          if isinstance(subscription, str) and subscription else None),
            delivery_attempt=(attempt if isinstance(attempt, int)
                              and not isinstance(attempt, bool) and attempt > 0 else None),
            body_size=_decoded_size(message.get("data")),
        )

    def merged(self, other: Delivery) -> Delivery:
        """This delivery, with what it lacks taken from `other`."""
        return Delivery(
            message_id=self.message_id or other.message_id,
            subscription=self.subscription or other.subscription,
            delivery_attempt=self.delivery_attempt or other.delivery_attempt,
            body_size=self.body_size if self.body_size is not None else other.body_size,
        )


PUSHED: ContextVar[Delivery | None] = ContextVar("audiary_pushed", default=None)
"""The push being handled in this context, as its envelope says (set by `http`)."""


def _decoded_size(data: object) -> int | None:
    if not isinstance(data, str):
        return None
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return None


def consumer_attributes(topic: str, attributes: Mapping[str, str],
                        delivery: Delivery) -> dict[str, AttributeValue]:
    """The attributes of a CONSUMER span `process <topic>` for one delivered message."""
    found: dict[str, AttributeValue] = {
        semconv.MESSAGING_SYSTEM: SYSTEM,
        semconv.MESSAGING_OPERATION_TYPE: PROCESS,
        semconv.MESSAGING_OPERATION_NAME: PROCESS,
        semconv.MESSAGING_DESTINATION_NAME: topic,
    }
    optional: dict[str, AttributeValue | None] = {
        semconv.MESSAGING_DESTINATION_SUBSCRIPTION_NAME: delivery.subscription,
        semconv.MESSAGING_MESSAGE_ID: delivery.message_id,
        semconv.MESSAGING_GCP_PUBSUB_MESSAGE_DELIVERY_ATTEMPT: delivery.delivery_attempt,
        semconv.MESSAGING_MESSAGE_BODY_SIZE: delivery.body_size,
        semconv.MESSAGING_MESSAGE_CONVERSATION_ID: attributes.get(CORRELATION_ATTRIBUTE),
    }
    found.update({k: v for k, v in optional.items() if v is not None})
    return found


def span_name(operation: str, topic: str) -> str:
    """`<operation> <destination>`, the conventions' span name."""
    return f"{operation} {topic}"
