"""Service accounts, one per component, and the grants that give each exactly what it uses.

A grant names a role and the narrowest resource it can be bound on (a bucket, a topic, a
secret...). Project-wide bindings are used only where Google offers nothing narrower
(Firestore's `roles/datastore.user`, the build's log writing, Cloud Trace's
`roles/cloudtrace.agent`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import pulumi
from pulumi_gcp import (
    artifactregistry,
    cloudrunv2,
    projects,
    pubsub,
    secretmanager,
    serviceaccount,
    storage,
)

from infra.options import child_options

Scope = Literal[
    "project", "bucket", "topic", "subscription", "secret", "service_account", "repository",
    "run_service",
]


@dataclass(frozen=True)
class Grant:
    """`role` on one resource: `target` is its name or id, `label` names it in the stack."""

    role: str
    scope: Scope
    target: pulumi.Input[str]
    label: str
    location: str | None = None  # for regional resources (repositories, Cloud Run services)
    # An IAM condition ({"title", "expression", "description"}); project scope only.
    condition: projects.IAMMemberConditionArgsDict | None = None


def bind(
    name: str, member: pulumi.Input[str], grant: Grant, opts: pulumi.ResourceOptions
) -> pulumi.CustomResource:
    """Create the additive IAM binding for `grant` (never a policy that would drop others)."""
    role, target = grant.role, grant.target
    match grant.scope:
        case "project":
            return projects.IAMMember(name, project=target, role=role, member=member,
                                      condition=grant.condition, opts=opts)
        case "bucket":
            return storage.BucketIAMMember(name, bucket=target, role=role, member=member,
                                           opts=opts)
        case "topic":
            return pubsub.TopicIAMMember(name, topic=target, role=role, member=member, opts=opts)
        case "subscription":
            return pubsub.SubscriptionIAMMember(name, subscription=target, role=role,
                                                member=member, opts=opts)
        case "secret":
            return secretmanager.SecretIamMember(name, secret_id=target, role=role,
                                                 member=member, opts=opts)
        case "service_account":
            return serviceaccount.IAMMember(name, service_account_id=target, role=role,
                                            member=member, opts=opts)
        case "repository":
            return artifactregistry.RepositoryIamMember(
                name, repository=target, location=grant.location, role=role, member=member,
                opts=opts)
        case "run_service":
            return cloudrunv2.ServiceIamMember(name, name=target, location=grant.location,
                                               role=role, member=member, opts=opts)
    raise ValueError(f"unknown grant scope {grant.scope!r}")


@dataclass(frozen=True)
class ServiceAccountsArgs:
    project: str
    # Short key -> what the account is for; the account id is `audiary-<key>`.
    purposes: Mapping[str, str]


class ServiceAccounts(pulumi.ComponentResource):
    """One service account per component, so each runs with only its own grants."""

    def __init__(self, name: str, args: ServiceAccountsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:iam:ServiceAccounts", name, None, opts)
        self.accounts = {
            key: serviceaccount.Account(
                f"{name}-{key}",
                project=args.project,
                account_id=f"audiary-{key}",
                display_name=f"Audiary {key}",
                description=purpose,
                opts=child_options(self, opts),
            )
            for key, purpose in args.purposes.items()
        }
        self.register_outputs({key: sa.email for key, sa in self.accounts.items()})

    def __getitem__(self, key: str) -> serviceaccount.Account:
        return self.accounts[key]


@dataclass(frozen=True)
class GrantsArgs:
    # Account key -> (member, its grants).
    grants: Mapping[str, tuple[pulumi.Input[str], Sequence[Grant]]]


def _short_role(role: str) -> str:
    return role.rsplit("/", 1)[-1].replace(".", "-")


class Grants(pulumi.ComponentResource):
    """Every role every Audiary service account holds, in one place."""

    def __init__(self, name: str, args: GrantsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:iam:Grants", name, None, opts)
        child = child_options(self, opts)
        self.bindings = [
            bind(f"{key}-{_short_role(grant.role)}-{grant.label}", member, grant, child)
            for key, (member, grants) in args.grants.items()
            for grant in grants
        ]
        self.register_outputs({})
