"""`Publisher` on Google Cloud Pub/Sub, plus the topic and subscription helpers of the local stack.

The emulator is used when PUBSUB_EMULATOR_HOST is set (the client library reads it) or when an
`emulator_host` is passed explicitly. The gcloud Pub/Sub emulator accepts and honours
`dead_letter_policy` and `retry_policy` on subscriptions, so the local stack configures them
exactly as the cloud does.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Self

import grpc  # type: ignore[import-untyped]  # no stubs installed; only insecure_channel is used
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import PublisherClient
from google.pubsub_v1.services.publisher import PublisherClient as PublisherAdminClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber import SubscriberClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from google.pubsub_v1.types import DeadLetterPolicy, PushConfig, RetryPolicy, Subscription

from audiary.errors import NotFoundError
from audiary.observability import messaging
from audiary.ports import Publisher
from audiary.settings import Settings


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    return f"projects/{project}/subscriptions/{subscription}"


def _emulator_kwargs(emulator_host: str | None, transport: type[Any]) -> dict[str, Any]:
    """Client arguments that reach an emulator over plain gRPC, or none for the real service."""
    if not emulator_host:
        return {}
    channel = grpc.insecure_channel(emulator_host)
    return {
        "transport": transport(host=emulator_host, channel=channel),
        "client_options": {"api_endpoint": emulator_host},
    }


class PubSubPublisher(Publisher):
    """Publishes to topics of one project; the client (and its batching thread) is made once."""

    def __init__(self, project: str, *, emulator_host: str | None = None) -> None:
        self.project = project
        self._client = PublisherClient(**_emulator_kwargs(emulator_host, PublisherGrpcTransport))

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.project_id, emulator_host=settings.pubsub_emulator_host)

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Publish in a `send <topic>` span, whose trace context the message carries."""
        path = topic_path(self.project, topic)

        def send(attrs: dict[str, str]) -> str:
            try:
                message_id: str = self._client.publish(path, data, **attrs).result()
            except gexc.NotFound as exc:
                raise NotFoundError(
                    f"Pub/Sub topic {path} does not exist; create it first (ensure_topic)"
                ) from exc
            return message_id

        return messaging.send(topic, data, attributes, send)


def _publisher_admin(emulator_host: str | None) -> PublisherAdminClient:
    return PublisherAdminClient(**_emulator_kwargs(emulator_host, PublisherGrpcTransport))


def _subscriber(emulator_host: str | None) -> SubscriberClient:
    return SubscriberClient(**_emulator_kwargs(emulator_host, SubscriberGrpcTransport))


def ensure_topic(project: str, topic: str, *, emulator_host: str | None = None) -> str:
    """Create the topic unless it exists; returns its path."""
    path = topic_path(project, topic)
    # AlreadyExists is success: this helper is meant to be repeated.
    with _publisher_admin(emulator_host) as client, contextlib.suppress(gexc.AlreadyExists):
        client.create_topic(name=path)
    return path


def _subscription(
    project: str,
    subscription: str,
    topic: str,
    *,
    push_endpoint: str | None,
    ack_deadline_s: int,
    dead_letter_topic: str | None,
    max_delivery_attempts: int,
    min_backoff_s: float,
    max_backoff_s: float,
    retry_policy: bool = True,
) -> Subscription:
    spec = Subscription(
        name=subscription_path(project, subscription),
        topic=topic_path(project, topic),
        ack_deadline_seconds=ack_deadline_s,
    )
    if retry_policy:
        spec.retry_policy = RetryPolicy(
            minimum_backoff=timedelta(seconds=min_backoff_s),
            maximum_backoff=timedelta(seconds=max_backoff_s),
        )
    if push_endpoint:
        spec.push_config = PushConfig(push_endpoint=push_endpoint)
    if dead_letter_topic:
        spec.dead_letter_policy = DeadLetterPolicy(
            dead_letter_topic=topic_path(project, dead_letter_topic),
            max_delivery_attempts=max_delivery_attempts,
        )
    return spec


def _ensure_subscription(
    spec: Subscription, dead_letter_topic: str | None, project: str, emulator_host: str | None
) -> str:
    if dead_letter_topic:
        ensure_topic(project, dead_letter_topic, emulator_host=emulator_host)
    with _subscriber(emulator_host) as client:
        try:
            client.create_subscription(request=spec)
        except gexc.AlreadyExists:
            if spec.push_config.push_endpoint:
                # Local servers may listen on new ports after a restart: keep the endpoint current.
                client.modify_push_config(subscription=spec.name, push_config=spec.push_config)
        except gexc.NotFound as exc:
            raise NotFoundError(
                f"cannot create subscription {spec.name}: topic {spec.topic} does not exist"
            ) from exc
    name: str = spec.name
    return name


def ensure_push_subscription(
    project: str,
    subscription: str,
    topic: str,
    push_endpoint: str,
    *,
    ack_deadline_s: int = 60,
    dead_letter_topic: str | None = None,
    max_delivery_attempts: int = 5,
    min_backoff_s: float = 10.0,
    max_backoff_s: float = 600.0,
    emulator_host: str | None = None,
) -> str:
    """Create a push subscription unless it exists; returns its path.

    `dead_letter_topic` is a topic name in the same project and is created if needed.
    An existing subscription gets `push_endpoint`; its other settings are left as they are.
    """
    spec = _subscription(
        project,
        subscription,
        topic,
        push_endpoint=push_endpoint,
        ack_deadline_s=ack_deadline_s,
        dead_letter_topic=dead_letter_topic,
        max_delivery_attempts=max_delivery_attempts,
        min_backoff_s=min_backoff_s,
        max_backoff_s=max_backoff_s,
    )
    return _ensure_subscription(spec, dead_letter_topic, project, emulator_host)


def ensure_pull_subscription(
    project: str,
    subscription: str,
    topic: str,
    *,
    ack_deadline_s: int = 60,
    dead_letter_topic: str | None = None,
    max_delivery_attempts: int = 5,
    min_backoff_s: float = 10.0,
    max_backoff_s: float = 600.0,
    retry_policy: bool = True,
    emulator_host: str | None = None,
) -> str:
    """Create a pull subscription unless it exists; returns its path.

    `retry_policy=False` leaves the backoffs out: a message handed back is redelivered at
    once, which `count_waiting` needs.
    """
    spec = _subscription(
        project,
        subscription,
        topic,
        push_endpoint=None,
        ack_deadline_s=ack_deadline_s,
        dead_letter_topic=dead_letter_topic,
        max_delivery_attempts=max_delivery_attempts,
        min_backoff_s=min_backoff_s,
        max_backoff_s=max_backoff_s,
        retry_policy=retry_policy,
    )
    return _ensure_subscription(spec, dead_letter_topic, project, emulator_host)


def pull_messages(
    project: str,
    subscription: str,
    *,
    max_messages: int = 100,
    timeout_s: float = 5.0,
    emulator_host: str | None = None,
) -> list[tuple[bytes, dict[str, str]]]:
    """Pull and acknowledge messages of a pull subscription: (data, attributes) pairs.

    Waits up to `timeout_s` for the first message; may return fewer messages than are
    waiting (Pub/Sub pull is best effort), so call again until you have what you expect.
    """
    path = subscription_path(project, subscription)
    with _subscriber(emulator_host) as client:
        try:
            response = client.pull(
                subscription=path, max_messages=max_messages, timeout=timeout_s, retry=None
            )
        except gexc.DeadlineExceeded:
            return []  # nothing arrived in time
        received = list(response.received_messages)
        if received:
            client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in received])
    return [(bytes(m.message.data), dict(m.message.attributes)) for m in received]


def count_waiting(
    project: str,
    subscription: str,
    *,
    limit: int = 10_000,
    emulator_host: str | None = None,
) -> int:
    """How many messages wait on a pull subscription (up to `limit`), without consuming any.

    Pulls until nothing new comes, then hands every message back (ack deadline 0). Exact on a
    subscription without a retry policy; with one, the emulator holds a handed-back message
    for the backoff, so the next count misses it. Pull and nack make no delivery attempt count
    while the subscription has no dead-letter policy (dead-letter subscriptions have none).
    """
    path = subscription_path(project, subscription)
    seen: set[str] = set()
    ack_ids: list[str] = []
    with _subscriber(emulator_host) as client:
        try:
            while len(seen) < limit:
                # return_immediately: an empty subscription answers at once instead of holding
                # the pull open for about a second. It is deprecated for throughput, which a
                # count does not need; the client warns on every call.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "The return_immediately flag",
                                            DeprecationWarning)
                    response = client.pull(
                        request={"subscription": path, "max_messages": min(1000, limit),
                                 "return_immediately": True},
                        timeout=10.0, retry=None,
                    )
                new = [m for m in response.received_messages
                       if m.message.message_id not in seen]
                if not new:
                    break
                seen.update(m.message.message_id for m in new)
                ack_ids.extend(m.ack_id for m in response.received_messages)
        finally:
            for start in range(0, len(ack_ids), 1000):
                client.modify_ack_deadline(subscription=path, ack_ids=ack_ids[start:start + 1000],
                                           ack_deadline_seconds=0)
    return min(len(seen), limit)
