"""The Artifact Registry repository for the transcriber image (and the function builds)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import artifactregistry

from infra.options import child_options

KEEP_RECENT_VERSIONS = 10
DELETE_AFTER_S = 30 * 24 * 3600


@dataclass(frozen=True)
class ImageRepositoryArgs:
    project: str
    region: str
    repository_id: str = "audiary"


class ImageRepository(pulumi.ComponentResource):
    """A Docker repository; `url` is the prefix `make image` pushes under."""

    def __init__(self, name: str, args: ImageRepositoryArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:registry:ImageRepository", name, None, opts)
        self.repository = artifactregistry.Repository(
            name,
            project=args.project,
            location=args.region,
            repository_id=args.repository_id,
            format="DOCKER",
            description="Audiary images: the transcriber and the function builds",
            # Every deploy of a function adds an image; keep the recent ones only.
            cleanup_policies=[
                {"id": "keep-recent", "action": "KEEP",
                 "most_recent_versions": {"keep_count": KEEP_RECENT_VERSIONS}},
                {"id": "delete-old", "action": "DELETE",
                 "condition": {"tag_state": "ANY", "older_than": f"{DELETE_AFTER_S}s"}},
            ],
            opts=child_options(self, opts),
        )
        self.url = pulumi.Output.concat(
            args.region, "-docker.pkg.dev/", args.project, "/", self.repository.repository_id)
        self.register_outputs({"url": self.url})
