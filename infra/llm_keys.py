"""Secret Manager secrets for the LLM API keys, readable only by the members given.

Both secrets always exist, so a key can be added later; a version (the value) is created only
for a key set in the stack configuration (`pulumi config set --secret ...`), and only those
are exposed to `summarize` as environment variables. Values stay secret in the Pulumi state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import secretmanager

from infra.options import child_options

ACCESSOR = "roles/secretmanager.secretAccessor"
# Environment variable (read by audiary.settings) -> secret id.
SECRET_IDS = {
    "OPENAI_API_KEY": "audiary-openai-api-key",
    "ANTHROPIC_API_KEY": "audiary-anthropic-api-key",
}


@dataclass(frozen=True)
class LlmKeysArgs:
    project: str
    # Environment variable -> value (a secret Output), for the keys that are configured.
    values: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    # Key -> member allowed to read every version (secretAccessor on each secret).
    readers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class LlmKeys(pulumi.ComponentResource):
    """`secrets` by environment variable; `configured` lists those that have a value."""

    def __init__(self, name: str, args: LlmKeysArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:secrets:LlmKeys", name, None, opts)
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
            for env, secret_id in SECRET_IDS.items()
        }
        self.versions = {
            env: secretmanager.SecretVersion(
                f"{name}-{SECRET_IDS[env]}",
                secret=self.secrets[env].id,
                secret_data=_secret(value),
                opts=child,
            )
            for env, value in sorted(args.values.items())
        }
        # Bound on each secret, never on the project: no other account can read a key.
        self.accessors = [
            secretmanager.SecretIamMember(
                f"{name}-{SECRET_IDS[env]}-{reader}",
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


def _secret(value: pulumi.Output[str]) -> pulumi.Output[str]:
    """`value`, marked secret again so that no caller can hand in plain text by mistake."""
    marked: pulumi.Output[str] = pulumi.Output.secret(value)
    return marked
