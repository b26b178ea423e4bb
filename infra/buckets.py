"""The buckets: uploads (inbox/, quarantine/), work, transcripts, userfeedback, datasets
(training clips and manifests built from corrections), sources.

All use uniform bucket-level access (IAM only, no object ACLs) and enforced public access
prevention, so no object can be made public by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import storage

from audiary import names
from infra.options import child_options

# Label Studio's page fetches review audio from its signed URL, in ranges (`Range` must pass
# the preflight: GCS answers it with the headers listed here) and reads the answer's length and
# range. The same cache time as the uploads rule.
REVIEW_CORS_METHODS = ("GET",)
REVIEW_CORS_RESPONSE_HEADERS = ("Accept-Ranges", "Content-Length", "Content-Range",
                                "Content-Type", "Range")


@dataclass(frozen=True)
class BucketsArgs:
    project: str
    location: str
    uploads: str
    work: str
    transcripts: str
    feedback: str
    datasets: str
    models: str
    sources: str
    work_ttl_days: int
    # Origins of the web page, which PUTs uploads straight to signed URLs of the uploads bucket.
    web_origins: tuple[str, ...] = ()
    # Origins of Label Studio's page, which plays review audio from signed URLs of the
    # userfeedback bucket (`<job>/review/<item>.wav`: kept, unlike the work bucket's audio).
    review_origins: tuple[str, ...] = ()
    force_destroy: bool = False
    labels: dict[str, str] = field(default_factory=dict)


class Buckets(pulumi.ComponentResource):
    """Creates the seven buckets; each is an attribute named by its role."""

    def __init__(self, name: str, args: BucketsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:storage:Buckets", name, None, opts)

        def bucket(role: str, bucket_name: str, ttl_days: int | None = None,
                   cors: list[storage.BucketCorArgsDict] | None = None) -> storage.Bucket:
            rules: list[storage.BucketLifecycleRuleArgsDict] = [] if ttl_days is None else [
                {"action": {"type": "Delete"}, "condition": {"age": ttl_days}}]
            return storage.Bucket(
                f"{name}-{role}",
                project=args.project,
                name=bucket_name,
                location=args.location,
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                lifecycle_rules=rules,
                cors=cors or [],
                force_destroy=args.force_destroy,
                labels=args.labels,
                opts=child_options(self, opts),
            )

        # The same rule audiary.local.gcs_emulator gives the local emulator.
        upload_cors: list[storage.BucketCorArgsDict] = [{
            "origins": list(args.web_origins),
            "methods": list(names.UPLOAD_CORS_METHODS),
            "response_headers": list(names.UPLOAD_CORS_RESPONSE_HEADERS),
            "max_age_seconds": names.UPLOAD_CORS_MAX_AGE_S,
        }] if args.web_origins else []
        self.uploads = bucket("uploads", args.uploads, cors=upload_cors)
        review_cors: list[storage.BucketCorArgsDict] = [{
            "origins": list(args.review_origins),
            "methods": list(REVIEW_CORS_METHODS),
            "response_headers": list(REVIEW_CORS_RESPONSE_HEADERS),
            "max_age_seconds": names.UPLOAD_CORS_MAX_AGE_S,
        }] if args.review_origins else []
        # Canonical audio and chunk results are only needed while a job runs (and for a
        # retry); the lifecycle rule deletes them after the TTL.
        self.work = bucket("work", args.work, args.work_ttl_days)
        self.transcripts = bucket("transcripts", args.transcripts)
        self.feedback = bucket("feedback", args.feedback, cors=review_cors)
        # Versioned datasets (v<N>/clips/, v<N>/<split>.jsonl): kept, they are what a model
        # was trained and evaluated on.
        self.datasets = bucket("datasets", args.datasets)
        # The model registry's weights (`<name>@<version>/`), read by the transcriber.
        self.models = bucket("models", args.models)
        # No TTL: Pulumi deletes an archive itself when a new one replaces it.
        self.sources = bucket("sources", args.sources)
        self.register_outputs({
            "uploads": self.uploads.name, "work": self.work.name,
            "transcripts": self.transcripts.name, "feedback": self.feedback.name,
            "datasets": self.datasets.name, "models": self.models.name,
            "sources": self.sources.name,
        })
