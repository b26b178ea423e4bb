"""Pub/Sub: the pipeline topics, the inbox notification, and push subscriptions with dead letters.

Topic and subscription names come from audiary.names, as in the native local stack
(audiary.local.stack), so code and tests see the same names everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_gcp import projects, pubsub, storage

from audiary import names
from infra.options import child_options

PUBLISHER = "roles/pubsub.publisher"
SUBSCRIBER = "roles/pubsub.subscriber"
# Exponential backoff between redeliveries of a failed push (Pub/Sub's bounds: 0 s..600 s).
MIN_BACKOFF = "10s"
MAX_BACKOFF = "600s"
# The deadletters function writes a few documents per letter.
DEAD_LETTER_ACK_DEADLINE_S = 60
# Dead letters wait a week for someone to look (the alert fires on the first one).
DEAD_LETTER_RETENTION = "604800s"
# An empty TTL: the subscription never expires, however quiet the pipeline is.
NEVER_EXPIRE: pubsub.SubscriptionExpirationPolicyArgsDict = {"ttl": ""}


@dataclass(frozen=True)
class TopicsArgs:
    project: str
    names: Sequence[str] = names.PIPELINE_TOPICS


class Topics(pulumi.ComponentResource):
    """The pipeline topics, by name."""

    def __init__(self, name: str, args: TopicsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:messaging:Topics", name, None, opts)
        self.topics = {
            topic: pubsub.Topic(f"{name}-{topic}", project=args.project, name=topic,
                                opts=child_options(self, opts))
            for topic in args.names
        }
        self.register_outputs({t: topic.id for t, topic in self.topics.items()})

    def __getitem__(self, topic: str) -> pubsub.Topic:
        return self.topics[topic]


@dataclass(frozen=True)
class UploadNotificationArgs:
    project: str
    bucket: pulumi.Input[str]
    topic: pubsub.Topic
    prefix: str = names.PREFIX_INBOX


class UploadNotification(pulumi.ComponentResource):
    """OBJECT_FINALIZE under `inbox/` -> a JSON_API_V1 message on `audio-uploaded`."""

    def __init__(self, name: str, args: UploadNotificationArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:messaging:UploadNotification", name, None, opts)
        # GCS publishes as the project's storage service agent, which needs publisher on the
        # topic before the notification can be created.
        agent = storage.get_project_service_account_output(project=args.project)
        grant = pubsub.TopicIAMMember(
            f"{name}-storage-publisher",
            topic=args.topic.id,
            role=PUBLISHER,
            member=agent.email_address.apply(lambda email: f"serviceAccount:{email}"),
            opts=child_options(self, opts),
        )
        self.notification = storage.Notification(
            name,
            bucket=args.bucket,
            topic=args.topic.id,
            payload_format="JSON_API_V1",
            event_types=["OBJECT_FINALIZE"],
            object_name_prefix=args.prefix,
            opts=child_options(self, opts, grant),
        )
        self.register_outputs({"notification": self.notification.notification_id})


@dataclass(frozen=True)
class PushSubscriptionArgs:
    project: str
    subscription: str
    topic: pubsub.Topic
    endpoint: pulumi.Input[str]
    invoker_email: pulumi.Input[str]
    # The Pub/Sub service agent forwards dead letters; it needs the two grants made here.
    pubsub_agent: projects.ServiceIdentity
    max_delivery_attempts: int
    ack_deadline_s: int
    # The deadletters function, which ends the job of every dead letter.
    dead_letter_endpoint: pulumi.Input[str]


class PushSubscription(pulumi.ComponentResource):
    """A push subscription with an OIDC token, bounded retries and its own dead-letter topic.

    Dead letters land on `<subscription>-dead-letter`, kept on a pull subscription of the same
    name for inspection and alerting, and pushed to the deadletters function by
    `deadletters-<subscription>` (as the local stack does).
    """

    def __init__(self, name: str, args: PushSubscriptionArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:messaging:PushSubscription", name, None, opts)
        child = child_options(self, opts)
        dead_letter = names.dead_letter_topic(args.subscription)
        self.dead_letter_topic = pubsub.Topic(
            f"{name}-dead-letter", project=args.project, name=dead_letter, opts=child)
        self.dead_letter_subscription = pubsub.Subscription(
            f"{name}-dead-letter",
            project=args.project,
            name=dead_letter,
            topic=self.dead_letter_topic.id,
            message_retention_duration=DEAD_LETTER_RETENTION,
            expiration_policy=NEVER_EXPIRE,
            opts=child,
        )
        self.subscription = pubsub.Subscription(
            name,
            project=args.project,
            name=args.subscription,
            topic=args.topic.id,
            ack_deadline_seconds=args.ack_deadline_s,
            push_config={
                "push_endpoint": args.endpoint,
                "oidc_token": {
                    "service_account_email": args.invoker_email,
                    # The receiving service checks the token was minted for its own URL.
                    "audience": args.endpoint,
                },
            },
            retry_policy={"minimum_backoff": MIN_BACKOFF, "maximum_backoff": MAX_BACKOFF},
            dead_letter_policy={
                "dead_letter_topic": self.dead_letter_topic.id,
                "max_delivery_attempts": args.max_delivery_attempts,
            },
            expiration_policy=NEVER_EXPIRE,
            opts=child,
        )
        self.dead_letter_consumer = pubsub.Subscription(
            f"{name}-dead-letter-consumer",
            project=args.project,
            name=names.dead_letter_consumer(args.subscription),
            topic=self.dead_letter_topic.id,
            ack_deadline_seconds=DEAD_LETTER_ACK_DEADLINE_S,
            push_config={
                "push_endpoint": args.dead_letter_endpoint,
                "oidc_token": {"service_account_email": args.invoker_email,
                               "audience": args.dead_letter_endpoint},
            },
            retry_policy={"minimum_backoff": MIN_BACKOFF, "maximum_backoff": MAX_BACKOFF},
            message_retention_duration=DEAD_LETTER_RETENTION,
            expiration_policy=NEVER_EXPIRE,
            opts=child,
        )
        self.agent_publisher = pubsub.TopicIAMMember(
            f"{name}-dead-letter-publisher",
            topic=self.dead_letter_topic.id,
            role=PUBLISHER,
            member=args.pubsub_agent.member,
            opts=child,
        )
        self.agent_subscriber = pubsub.SubscriptionIAMMember(
            f"{name}-agent-subscriber",
            subscription=self.subscription.id,
            role=SUBSCRIBER,
            member=args.pubsub_agent.member,
            opts=child,
        )
        self.register_outputs({
            "subscription": self.subscription.name,
            "dead_letter_topic": self.dead_letter_topic.name,
            "dead_letter_consumer": self.dead_letter_consumer.name,
        })
