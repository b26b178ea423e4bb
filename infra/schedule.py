"""Cloud Scheduler: the jobs that call the sweeper function (audiary.services.sweeper), the
learning function's schedule (audiary.services.learning) and the review function's sync
(audiary.services.review)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pulumi
from pulumi_gcp import cloudscheduler

from infra.options import child_options


@dataclass(frozen=True)
class ScheduleArgs:
    project: str
    region: str
    schedule: str  # cron, in UTC
    uri: pulumi.Input[str]
    # Signs the OIDC token, which Cloud Run IAM checks (the sweeper's: an invoker of it) or the
    # function itself (review's, which is public).
    caller_email: pulumi.Input[str]
    audience: pulumi.Input[str]
    # How long a run may take: the function's own timeout.
    attempt_deadline_s: int


class _Schedule(pulumi.ComponentResource):
    """POST to `uri` on `schedule`; a missed or failed run is simply the next one's.

    A subclass is one job: its type token (part of the job's URN) and the job's name.
    """

    TYPE: ClassVar[str]
    JOB: ClassVar[str]
    DESCRIPTION: ClassVar[str]

    def __init__(self, name: str, args: ScheduleArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, opts)
        self.job = cloudscheduler.Job(
            name,
            project=args.project,
            region=args.region,
            name=self.JOB,
            description=self.DESCRIPTION,
            schedule=args.schedule,
            time_zone="Etc/UTC",
            attempt_deadline=f"{args.attempt_deadline_s}s",
            # Runs overlap harmlessly, so a failed run is not retried: the next one comes soon.
            retry_config={"retry_count": 0},
            http_target={
                "uri": args.uri,
                "http_method": "POST",
                "oidc_token": {"service_account_email": args.caller_email,
                               "audience": args.audience},
            },
            opts=child_options(self, opts),
        )
        self.register_outputs({"job": self.job.name, "schedule": self.job.schedule})


class SweepSchedule(_Schedule):
    TYPE = "audiary:schedule:SweepSchedule"
    JOB = "audiary-sweeper"
    DESCRIPTION = "Re-drives, then fails, Audiary jobs that made no progress"


class ReviewSyncSchedule(_Schedule):
    TYPE = "audiary:schedule:ReviewSyncSchedule"
    JOB = "audiary-review-sync"
    DESCRIPTION = ("Sends queued Audiary review items to Label Studio and applies the "
                   "annotations its webhook missed")


class LearningSchedule(_Schedule):
    TYPE = "audiary:schedule:LearningSchedule"
    JOB = "audiary-learning"
    DESCRIPTION = ("Builds the Audiary dataset the corrections stream left waiting and starts "
                   "training on the newest ready dataset once")
