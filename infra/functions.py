"""Cloud Functions (2nd gen): one per directory under functions/, source from infra.packaging.

`ingest`, `summarize` and `webhooks` are CloudEvent functions fed by Pub/Sub push
subscriptions (see infra.messaging), not by Eventarc triggers: a trigger's subscription is
created and owned by Eventarc, and neither it nor the provider lets a dead-letter policy be set
on it (hashicorp/terraform-provider-google#25069). functions-framework turns the push body
into the same CloudEvent the trigger would deliver, exactly as in the native local stack.
`api`, `sweeper` and `review` are HTTP functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi_gcp import cloudfunctionsv2, cloudrunv2, storage

from infra.options import child_options
from infra.packaging import build_archive

INVOKER = "roles/run.invoker"


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable whose value is the latest version of a Secret Manager secret."""

    secret_id: pulumi.Input[str]
    version: str = "latest"


@dataclass(frozen=True)
class CloudFunctionArgs:
    project: str
    region: str
    function: str  # the directory under functions/ and the Python entry point
    repo_root: Path
    build_dir: Path
    sources_bucket: storage.Bucket
    runtime: str
    service_account_email: pulumi.Input[str]
    build_service_account: pulumi.Input[str]  # projects/<p>/serviceAccounts/<email>
    docker_repository: pulumi.Input[str]
    env: Mapping[str, pulumi.Input[str]]
    memory: str
    cpu: str
    timeout_s: int
    concurrency: int
    max_instances: int
    # Pub/Sub-fed functions take only internal traffic; the API and a review function that
    # Label Studio calls take all (IAM still applies).
    public_ingress: bool = False
    secret_env: Mapping[str, SecretEnv] = field(default_factory=dict)
    invokers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class CloudFunction(pulumi.ComponentResource):
    """The archive object, the function and its invoker bindings.

    `uri` is the underlying Cloud Run service's URL (push endpoint and token audience),
    `url` the function's own https://<region>-<project>.cloudfunctions.net/<name> URL.
    """

    def __init__(self, name: str, args: CloudFunctionArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:functions:Function", name, None, opts)
        child = child_options(self, opts)
        self.archive = build_archive(args.repo_root, args.function, args.build_dir)
        # Named by content hash: unchanged sources keep the same object, so nothing is
        # uploaded and the function is not redeployed.
        self.source = storage.BucketObject(
            f"{name}-source",
            bucket=args.sources_bucket.name,
            name=self.archive.object_name,
            source=pulumi.FileAsset(str(self.archive.path)),
            content_type="application/zip",
            opts=child,
        )
        self.function = cloudfunctionsv2.Function(
            name,
            project=args.project,
            location=args.region,
            name=args.function,
            description=f"Audiary {args.function}",
            labels=args.labels,
            build_config={
                "runtime": args.runtime,
                "entry_point": args.function,
                "service_account": args.build_service_account,
                "docker_repository": args.docker_repository,
                "source": {"storage_source": {
                    "bucket": args.sources_bucket.name,
                    "object": self.source.name,
                }},
            },
            service_config={
                "service_account_email": args.service_account_email,
                "available_memory": args.memory,
                "available_cpu": args.cpu,
                "timeout_seconds": args.timeout_s,
                "max_instance_request_concurrency": args.concurrency,
                "min_instance_count": 0,
                "max_instance_count": args.max_instances,
                "ingress_settings": "ALLOW_ALL" if args.public_ingress else "ALLOW_INTERNAL_ONLY",
                "all_traffic_on_latest_revision": True,
                "environment_variables": dict(args.env),
                "secret_environment_variables": [
                    {"key": key, "project_id": args.project, "secret": ref.secret_id,
                     "version": ref.version}
                    for key, ref in sorted(args.secret_env.items())
                ],
            },
            opts=child,
        )
        # A 2nd gen function is served by a Cloud Run service of the same name; invoking it
        # takes run.invoker there.
        self.invoker_bindings = [
            cloudrunv2.ServiceIamMember(
                f"{name}-invoker-{key}",
                project=args.project,
                location=args.region,
                name=self.function.name,
                role=INVOKER,
                member=member,
                opts=child,
            )
            for key, member in sorted(args.invokers.items())
        ]
        self.url = self.function.url
        self.uri = self.function.service_config.apply(
            lambda config: config.uri if config and config.uri else "")
        self.register_outputs({"url": self.url, "uri": self.uri})
