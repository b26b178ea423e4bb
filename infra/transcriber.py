"""The transcriber on Cloud Run v2: one NVIDIA L4 per instance, or CPU only by config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import cloudrunv2

from infra.options import child_options

GPU_TYPE = "nvidia-l4"
PORT = 8080
HEALTH_PATH = "/healthz"
# /healthz answers 200 once the model is loaded; a cold start copies and loads it, so allow
# up to PROBE_PERIOD_S * PROBE_FAILURES (5 minutes) before Cloud Run gives up on an instance.
PROBE_PERIOD_S = 10
PROBE_FAILURES = 30
INVOKER = "roles/run.invoker"


@dataclass(frozen=True)
class TranscriberArgs:
    project: str
    region: str
    image: str
    service_account_email: pulumi.Input[str]
    env: Mapping[str, pulumi.Input[str]]
    gpu: bool
    gpu_zonal_redundancy_disabled: bool
    cpu: int
    memory_gib: int
    concurrency: int
    min_instances: int
    max_instances: int
    timeout_s: int
    invokers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class Transcriber(pulumi.ComponentResource):
    """The service `transcriber`; `url` is the push endpoint. Only `invokers` may call it."""

    def __init__(self, name: str, args: TranscriberArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:run:Transcriber", name, None, opts)
        limits = {"cpu": str(args.cpu), "memory": f"{args.memory_gib}Gi"}
        if args.gpu:
            limits["nvidia.com/gpu"] = "1"
        container: cloudrunv2.ServiceTemplateContainerArgsDict = {
            "image": args.image,
            "ports": {"container_port": PORT},
            "envs": [{"name": k, "value": v} for k, v in sorted(args.env.items())],
            "resources": {
                "limits": limits,
                # Inference runs inside the request, but the model loads in a background
                # thread and gunicorn drains on SIGTERM: CPU must never be throttled.
                # Cloud Run requires this for GPUs too.
                "cpu_idle": False,
                "startup_cpu_boost": True,
            },
            "startup_probe": {
                "http_get": {"path": HEALTH_PATH, "port": PORT},
                "period_seconds": PROBE_PERIOD_S,
                "timeout_seconds": 5,
                "failure_threshold": PROBE_FAILURES,
            },
        }
        template: cloudrunv2.ServiceTemplateArgsDict = {
            "service_account": args.service_account_email,
            "timeout": f"{args.timeout_s}s",
            "max_instance_request_concurrency": args.concurrency,
            "scaling": {
                "min_instance_count": args.min_instances,
                "max_instance_count": args.max_instances,
            },
            "containers": [container],
        }
        if args.gpu:
            template["node_selector"] = {"accelerator": GPU_TYPE}
            template["gpu_zonal_redundancy_disabled"] = args.gpu_zonal_redundancy_disabled
        self.service = cloudrunv2.Service(
            name,
            project=args.project,
            location=args.region,
            name="transcriber",
            # Only Pub/Sub (in this project) and the VPC may reach it; IAM checks the caller.
            ingress="INGRESS_TRAFFIC_INTERNAL_ONLY",
            deletion_protection=False,  # stateless: `pulumi down` may remove it
            labels=args.labels,
            template=template,
            opts=child_options(self, opts),
        )
        self.invoker_bindings = [
            cloudrunv2.ServiceIamMember(
                f"{name}-invoker-{key}",
                project=args.project,
                location=args.region,
                name=self.service.name,
                role=INVOKER,
                member=member,
                opts=child_options(self, opts),
            )
            for key, member in sorted(args.invokers.items())
        ]
        self.url = self.service.uri
        self.register_outputs({"url": self.url})
