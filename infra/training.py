"""The training job on Cloud Run jobs: `audiary train` on one NVIDIA L4 (containers/trainer).

The learning function starts one execution per ready dataset, overriding the container's
arguments with `train --dataset N` (audiary.adapters.training_launcher); only the accounts in
`launchers` may do that (Cloud Run Developer on this job alone: running with overrides needs
it). An execution that fails is not retried: the promoted model stays as it is, and the
candidate of a later dataset is the next try.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import cloudrunv2

from infra.options import child_options

GPU_TYPE = "nvidia-l4"
# Runs with overrides (the dataset version as arguments) need more than Cloud Run Invoker.
LAUNCHER = "roles/run.developer"
JOB_NAME = "audiary-train"


@dataclass(frozen=True)
class TrainingJobArgs:
    project: str
    region: str
    image: str
    service_account_email: pulumi.Input[str]
    env: Mapping[str, pulumi.Input[str]]
    gpu: bool = True
    gpu_zonal_redundancy_disabled: bool = True
    # An L4 instance needs at least 4 CPUs and 16 GiB; training reads clips and evaluates too.
    cpu: int = 8
    memory_gib: int = 32
    timeout_s: int = 4 * 3600
    launchers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class TrainingJob(pulumi.ComponentResource):
    """The job `audiary-train`; `name` is what AUDIARY_TRAIN_JOB names."""

    def __init__(self, name: str, args: TrainingJobArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:run:TrainingJob", name, None, opts)
        limits = {"cpu": str(args.cpu), "memory": f"{args.memory_gib}Gi"}
        if args.gpu:
            limits["nvidia.com/gpu"] = "1"
        task: cloudrunv2.JobTemplateTemplateArgsDict = {
            "service_account": args.service_account_email,
            "timeout": f"{args.timeout_s}s",
            "max_retries": 0,
            "containers": [{
                "image": args.image,
                "args": ["train"],
                "envs": [{"name": k, "value": v} for k, v in sorted(args.env.items())],
                "resources": {"limits": limits},
            }],
        }
        if args.gpu:
            task["node_selector"] = {"accelerator": GPU_TYPE}
            task["gpu_zonal_redundancy_disabled"] = args.gpu_zonal_redundancy_disabled
        self.job = cloudrunv2.Job(
            name,
            project=args.project,
            location=args.region,
            name=JOB_NAME,
            deletion_protection=False,
            labels=args.labels,
            template={"task_count": 1, "parallelism": 1, "template": task},
            opts=child_options(self, opts),
        )
        self.launcher_bindings = [
            cloudrunv2.JobIamMember(
                f"{name}-launcher-{key}", project=args.project, location=args.region,
                name=self.job.name, role=LAUNCHER, member=member,
                opts=child_options(self, opts))
            for key, member in sorted(args.launchers.items())
        ]
        self.name = pulumi.Output.concat("projects/", args.project, "/locations/",
                                         args.region, "/jobs/", self.job.name)
        self.register_outputs({"name": self.name})
