"""A pull subscription of one's own on a topic of the local stack, to count what was published
there by job (the services' push subscriptions do not see it): e2e tests and benchmarks check
with it that every message went out once."""

from __future__ import annotations

from collections import Counter

from audiary.adapters.pubsub import ensure_pull_subscription, pull_messages

__all__ = ["TopicTap"]


class TopicTap:
    def __init__(self, project: str, emulator_host: str, subscription: str, topic: str) -> None:
        self.project, self.host, self.subscription = project, emulator_host, subscription
        ensure_pull_subscription(project, subscription, topic, emulator_host=emulator_host)
        self.seen: Counter[str] = Counter()

    def counts(self) -> Counter[str]:
        """Everything published so far, by job id (pulls until the subscription is empty)."""
        while batch := pull_messages(self.project, self.subscription, timeout_s=1.0,
                                     emulator_host=self.host):
            self.seen.update(attributes.get("job_id", "?") for _, attributes in batch)
        return self.seen
