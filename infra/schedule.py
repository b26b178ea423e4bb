"""Cloud Scheduler: the job that calls the sweeper function (audiary.services.sweeper)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import cloudscheduler

from infra.options import child_options

# A sweep is a query and a few writes per stalled job; the function's own timeout is 300 s.
ATTEMPT_DEADLINE = "300s"


@dataclass(frozen=True)
class SweepScheduleArgs:
    project: str
    region: str
    schedule: str  # cron, in UTC
    uri: pulumi.Input[str]
    # Signs the OIDC token the function's Cloud Run IAM checks (an invoker of the function).
    caller_email: pulumi.Input[str]


class SweepSchedule(pulumi.ComponentResource):
    """POST to the sweeper on `schedule`; a missed or failed run is simply the next one's."""

    def __init__(self, name: str, args: SweepScheduleArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:schedule:SweepSchedule", name, None, opts)
        self.job = cloudscheduler.Job(
            name,
            project=args.project,
            region=args.region,
            name="audiary-sweeper",
            description="Re-drives, then fails, Audiary jobs that made no progress",
            schedule=args.schedule,
            time_zone="Etc/UTC",
            attempt_deadline=ATTEMPT_DEADLINE,
            # Runs overlap harmlessly, so a failed run is not retried: the next one comes soon.
            retry_config={"retry_count": 0},
            http_target={
                "uri": args.uri,
                "http_method": "POST",
                "oidc_token": {"service_account_email": args.caller_email,
                               "audience": args.uri},
            },
            opts=child_options(self, opts),
        )
        self.register_outputs({"job": self.job.name, "schedule": self.job.schedule})
