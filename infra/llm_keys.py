"""Secret Manager secrets mounted into one function as environment variables, readable only by
the members given: the LLM API keys (summarize) and the review desk's Label Studio token and
shared webhook secret (review).

Every secret of a set always exists, so a value can be added later; a version (the value) is
created only for a value set in the stack configuration (`pulumi config set --secret ...`), and
only those are exposed to the function as environment variables. Values stay secret in the
Pulumi state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import pulumi
from pulumi_gcp import secretmanager

from infra.options import child_options

ACCESSOR = "roles/secretmanager.secretAccessor"


@dataclass(frozen=True)
class SecretsArgs:
    project: str
    # Environment variable -> value (a secret Output), for the secrets that are configured.
    values: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    # Key -> member allowed to read every version (secretAccessor on each secret).
    readers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class MountedSecrets(pulumi.ComponentResource):
    """`secrets` by environment variable; `configured` lists those that have a value.

    A subclass is one set: its type token (part of its resources' URNs, so it must not change
    once deployed) and its secrets.
    """

    TYPE: ClassVar[str]
    # Environment variable (read by audiary.settings) -> secret id.
    SECRET_IDS: ClassVar[Mapping[str, str]]

    def __init__(self, name: str, args: SecretsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, opts)
        child = child_options(self, opts)
        self.secrets = {
            env: secretmanager.Secret(
                f"{name}-{secret_id}",
                project=args.project,
                secret_id=secret_id,
                replication={"auto": {}},
                labels=args.labels,
                opts=child,
            )
            for env, secret_id in self.SECRET_IDS.items()
        }
        self.versions = {
            env: secretmanager.SecretVersion(
                f"{name}-{self.SECRET_IDS[env]}",
                secret=self.secrets[env].id,
                secret_data=_secret(value),
                opts=child,
            )
            for env, value in sorted(args.values.items())
        }
        # Bound on each secret, never on the project: no other account can read a value.
        self.accessors = [
            secretmanager.SecretIamMember(
                f"{name}-{self.SECRET_IDS[env]}-{reader}",
                project=args.project,
                secret_id=secret.id,
                role=ACCESSOR,
                member=member,
                opts=child,
            )
            for env, secret in self.secrets.items()
            for reader, member in sorted(args.readers.items())
        ]
        self.configured = tuple(self.versions)
        self.register_outputs({"secrets": [s.secret_id for s in self.secrets.values()]})


class LlmKeys(MountedSecrets):
    """The LLM providers' API keys, for summarize."""

    TYPE = "audiary:secrets:LlmKeys"
    SECRET_IDS: ClassVar[Mapping[str, str]] = {
        "OPENAI_API_KEY": "audiary-openai-api-key",
        "ANTHROPIC_API_KEY": "audiary-anthropic-api-key",
    }


class ReviewSecrets(MountedSecrets):
    """What the review function talks to Label Studio with, and the secret it checks."""

    TYPE = "audiary:secrets:ReviewSecrets"
    SECRET_IDS: ClassVar[Mapping[str, str]] = {
        "AUDIARY_LABEL_STUDIO_TOKEN": "audiary-label-studio-token",
        "AUDIARY_REVIEW_SECRET": "audiary-review-secret",
    }


def _secret(value: pulumi.Output[str]) -> pulumi.Output[str]:
    """`value`, marked secret again so that no caller can hand in plain text by mistake."""
    marked: pulumi.Output[str] = pulumi.Output.secret(value)
    return marked
