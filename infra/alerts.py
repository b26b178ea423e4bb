"""Alert policies: a dead letter arrived, or a function or the transcriber fails too often."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import monitoring

from infra.options import child_options

DEAD_LETTER_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
REQUEST_METRIC = "run.googleapis.com/request_count"
WINDOW = "300s"


@dataclass(frozen=True)
class AlertsArgs:
    project: str
    dead_letter_subscriptions: Sequence[str]
    # Cloud Run services, including the ones behind 2nd gen functions (same names).
    services: Sequence[str]
    error_rate_threshold: float
    emails: Sequence[str] = field(default_factory=tuple)


class Alerts(pulumi.ComponentResource):
    """One policy per dead-letter subscription and one error-rate policy per service."""

    def __init__(self, name: str, args: AlertsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:monitoring:Alerts", name, None, opts)
        child = child_options(self, opts)
        self.channels = [
            monitoring.NotificationChannel(
                f"{name}-email-{i}", project=args.project, type="email",
                display_name=f"Audiary alerts: {email}", labels={"email_address": email},
                opts=child)
            for i, email in enumerate(args.emails)
        ]
        channels = [c.name for c in self.channels]
        self.dead_letters = [
            monitoring.AlertPolicy(
                f"{name}-{subscription}",
                project=args.project,
                display_name=f"Audiary: dead letters in {subscription}",
                combiner="OR",
                conditions=[{
                    "display_name": f"{subscription} holds undelivered messages",
                    "condition_threshold": {
                        "filter": (
                            'resource.type = "pubsub_subscription" AND '
                            f'resource.labels.subscription_id = "{subscription}" AND '
                            f'metric.type = "{DEAD_LETTER_METRIC}"'
                        ),
                        "comparison": "COMPARISON_GT",
                        "threshold_value": 0,
                        "duration": "0s",
                        "aggregations": [{"alignment_period": "60s",
                                          "per_series_aligner": "ALIGN_MAX"}],
                    },
                }],
                documentation={
                    "mime_type": "text/markdown",
                    "content": (
                        "A message failed every delivery attempt. Look at it with "
                        f"`gcloud pubsub subscriptions pull {subscription} --limit 10` "
                        "and at the job it names (its error says what went wrong)."
                    ),
                },
                notification_channels=channels,
                opts=child,
            )
            for subscription in args.dead_letter_subscriptions
        ]
        self.error_rates = [
            monitoring.AlertPolicy(
                f"{name}-{service}-errors",
                project=args.project,
                display_name=f"Audiary: {service} error rate above "
                             f"{args.error_rate_threshold:.0%}",
                combiner="OR",
                conditions=[{
                    "display_name": f"{service}: share of 5xx responses",
                    "condition_threshold": {
                        "filter": (_requests(service)
                                   + ' AND metric.labels.response_code_class = "5xx"'),
                        "denominator_filter": _requests(service),
                        "comparison": "COMPARISON_GT",
                        "threshold_value": args.error_rate_threshold,
                        "duration": WINDOW,
                        "aggregations": [_rate()],
                        "denominator_aggregations": [_rate()],
                    },
                }],
                notification_channels=channels,
                opts=child,
            )
            for service in args.services
        ]
        self.register_outputs({})


def _requests(service: str) -> str:
    return (
        f'metric.type = "{REQUEST_METRIC}" AND resource.type = "cloud_run_revision" AND '
        f'resource.labels.service_name = "{service}"'
    )


def _rate() -> monitoring.AlertPolicyConditionConditionThresholdAggregationArgsDict:
    return {
        "alignment_period": WINDOW,
        "per_series_aligner": "ALIGN_DELTA",
        "cross_series_reducer": "REDUCE_SUM",
        "group_by_fields": ["resource.labels.service_name"],
    }
