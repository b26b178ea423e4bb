"""The Google APIs the stack uses, enabled before anything that needs them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import projects

from infra.options import child_options

REQUIRED_APIS = (
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",  # builds the function images
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",  # runs the sweeper and the review sync
    "cloudtrace.googleapis.com",  # every service's spans
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",  # signBlob: the API and review sign URLs without a key file
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
)


@dataclass(frozen=True)
class ProjectApisArgs:
    project: str


class ProjectApis(pulumi.ComponentResource):
    """Enables each API in REQUIRED_APIS; `pulumi down` leaves them enabled."""

    def __init__(self, name: str, args: ProjectApisArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:project:Apis", name, None, opts)
        self.services = [
            projects.Service(
                f"{name}-{api.split('.')[0]}",
                project=args.project,
                service=api,
                # Other things in the project may use these APIs too: disabling them on
                # destroy could break what Audiary did not create.
                disable_on_destroy=False,
                opts=child_options(self, opts),
            )
            for api in REQUIRED_APIS
        ]
        self.register_outputs({"apis": [s.service for s in self.services]})
