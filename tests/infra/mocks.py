"""Pulumi mocks that answer like Google Cloud, and helpers to inspect what a program declared.

`deploy(cfg)` runs the program under the mocks and returns every registered resource with
its inputs and mocked state, plus the resolved stack outputs. The engine is never involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi

PROJECT = "demo-proj"
PROJECT_NUMBER = "123456789012"
RUN_HASH = "abcdefghij"
STORAGE_AGENT = f"service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
PUBSUB_AGENT = f"service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"


def run_uri(service: str) -> str:
    return f"https://{service}-{RUN_HASH}-uc.a.run.app"


@dataclass(frozen=True)
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]
    id: str


class GcpMocks(pulumi.runtime.Mocks):
    """Records each resource and fills in the outputs GCP would compute (ids, emails, URLs)."""

    def __init__(self) -> None:
        self.resources: list[Registered] = []
        self.calls: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        state = dict(inputs)
        project = inputs.get("project", PROJECT)
        rid = f"{args.name}-id"
        match args.typ:
            case "gcp:serviceaccount/account:Account":
                email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
                rid = f"projects/{project}/serviceAccounts/{email}"
                state.update(email=email, member=f"serviceAccount:{email}", name=rid)
            case "gcp:projects/serviceIdentity:ServiceIdentity":
                state.update(email=PUBSUB_AGENT, member=f"serviceAccount:{PUBSUB_AGENT}")
            case "gcp:pubsub/topic:Topic":
                rid = f"projects/{project}/topics/{inputs['name']}"
            case "gcp:pubsub/subscription:Subscription":
                rid = f"projects/{project}/subscriptions/{inputs['name']}"
            case "gcp:storage/bucket:Bucket":
                rid = inputs["name"]
                state["url"] = f"gs://{rid}"
            case "gcp:artifactregistry/repository:Repository":
                rid = (f"projects/{project}/locations/{inputs['location']}/repositories/"
                       f"{inputs['repositoryId']}")
                state["name"] = inputs["repositoryId"]
            case "gcp:secretmanager/secret:Secret":
                rid = f"projects/{project}/secrets/{inputs['secretId']}"
                state["name"] = rid
            case "gcp:cloudrunv2/service:Service":
                state["uri"] = run_uri(inputs["name"])
            case "gcp:cloudfunctionsv2/function:Function":
                state["url"] = (f"https://{inputs['location']}-{project}.cloudfunctions.net/"
                                f"{inputs['name']}")
                state["serviceConfig"] = {**inputs.get("serviceConfig", {}),
                                          "uri": run_uri(inputs["name"])}
            case "gcp:firestore/database:Database":
                rid = f"projects/{project}/databases/{inputs['name']}"
        self.resources.append(Registered(args.typ, args.name, inputs, state, rid))
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs,
             ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.calls.append(args.token)
        if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
            return {"emailAddress": STORAGE_AGENT, "member": f"serviceAccount:{STORAGE_AGENT}",
                    "project": PROJECT}, []
        raise NotImplementedError(f"no mock for {args.token}")


MOCKS = GcpMocks()
# (type, name) -> the resources named in its depends_on option, as the program declared them.
DEPENDS_ON: dict[tuple[str, str], list[pulumi.Resource]] = {}


def _record_depends_on(
    args: pulumi.ResourceTransformationArgs,
) -> pulumi.ResourceTransformationResult | None:
    depends_on = args.opts.depends_on if args.opts is not None else None
    DEPENDS_ON[(args.type_, args.name)] = depends_on if isinstance(depends_on, list) else []
    return None


def activate() -> None:
    """Point the Pulumi runtime at MOCKS (idempotent; each test module calls it first)."""
    pulumi.runtime.set_mocks(MOCKS, project="audiary", stack="test", preview=False)
    if not getattr(activate, "recording", False):
        # Mocks do not see dependencies; a stack transformation sees every resource's options.
        pulumi.runtime.register_stack_transformation(_record_depends_on)
        activate.recording = True  # type: ignore[attr-defined]


@dataclass
class Deployment:
    """What one run of the program declared."""

    stack: Any
    outputs: dict[str, Any]
    resources: list[Registered] = field(default_factory=list)
    depends_on: dict[tuple[str, str], list[pulumi.Resource]] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, **inputs: Any) -> Registered:
        found = [r for r in self.of_type(typ)
                 if all(r.inputs.get(k) == v for k, v in inputs.items())]
        assert len(found) == 1, f"expected one {typ} with {inputs}, found {len(found)}"
        return found[0]

    def bindings(self) -> list[Binding]:
        return [b for r in self.resources if (b := Binding.of(r)) is not None]


# IAM member resource type -> (scope, input that names the resource bound on).
IAM_TYPES = {
    "gcp:projects/iAMMember:IAMMember": ("project", "project"),
    "gcp:storage/bucketIAMMember:BucketIAMMember": ("bucket", "bucket"),
    "gcp:pubsub/topicIAMMember:TopicIAMMember": ("topic", "topic"),
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": ("subscription", "subscription"),
    "gcp:secretmanager/secretIamMember:SecretIamMember": ("secret", "secretId"),
    "gcp:serviceaccount/iAMMember:IAMMember": ("service_account", "serviceAccountId"),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": ("repository", "repository"),
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": ("run_service", "name"),
    "gcp:cloudrunv2/jobIamMember:JobIamMember": ("run_job", "name"),
}


@dataclass(frozen=True)
class Binding:
    member: str
    role: str
    scope: str
    target: str
    condition: str | None = None

    @classmethod
    def of(cls, resource: Registered) -> Binding | None:
        if resource.typ not in IAM_TYPES:
            assert "iam" not in resource.typ.lower() or resource.typ.startswith("audiary:"), (
                f"IAM resource type {resource.typ} is not known to the tests")
            return None
        scope, key = IAM_TYPES[resource.typ]
        condition = (resource.inputs.get("condition") or {}).get("expression")
        return cls(resource.inputs["member"], resource.inputs["role"], scope,
                   resource.inputs[key], condition)


def strings(value: Any) -> Iterator[str]:
    """Every string anywhere inside `value` (dicts, lists, scalars)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


def deploy(cfg: Any) -> Deployment:
    """Run the program for `cfg` under the mocks; returns once every resource is registered."""
    from infra.program import build

    activate()
    MOCKS.resources.clear()
    DEPENDS_ON.clear()
    result: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        stack = build(cfg)
        result["stack"] = stack
        keys = list(stack.outputs)
        return pulumi.Output.all(*stack.outputs.values()).apply(
            lambda values: result.update(outputs=dict(zip(keys, values, strict=True))))

    # The wrapper returns only after every outstanding registration has finished.
    run()
    return Deployment(result["stack"], result["outputs"], list(MOCKS.resources),
                      dict(DEPENDS_ON))
