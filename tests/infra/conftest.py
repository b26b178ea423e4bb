"""Shared fixtures for the Pulumi program tests: one mocked deployment per variant."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import pulumi
    import pulumi_gcp  # noqa: F401
except ModuleNotFoundError as exc:  # say what to install instead of a bare import error
    raise ModuleNotFoundError(
        f"tests/infra needs the Pulumi SDKs ({exc.name} is missing): "
        ".venv/bin/pip install pulumi pulumi-gcp (they belong in pyproject's dev extra)"
    ) from exc

from tests.infra.mocks import PROJECT, Deployment, activate, deploy

activate()

from infra.config import StackConfig  # noqa: E402

IMAGE = "europe-west4-docker.pkg.dev/demo-proj/audiary/transcriber:test"
TRAINER_IMAGE = "europe-west4-docker.pkg.dev/demo-proj/audiary/trainer:test"
OPENAI_KEY = "sk-test-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-test-0123456789"
LABEL_STUDIO_URL = "https://review.example.org:8443/"
LABEL_STUDIO_TOKEN = "ls-test-token-0123456789"
REVIEW_SECRET = "review-test-secret-0123456789"


def stack_config(build_dir: Path, **overrides: object) -> StackConfig:
    """The configuration most tests use: GPU transcriber and trainer, both LLM keys set."""
    values: dict[str, object] = {
        "project": PROJECT,
        "transcriber_image": IMAGE,
        "trainer_image": TRAINER_IMAGE,
        "openai_api_key": pulumi.Output.secret(OPENAI_KEY),
        "anthropic_api_key": pulumi.Output.secret(ANTHROPIC_KEY),
        "build_dir": build_dir,
    }
    values.update(overrides)
    return StackConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("function-archives")


@pytest.fixture(scope="module")
def gpu(build_dir: Path) -> Deployment:
    return deploy(stack_config(build_dir))


@pytest.fixture(scope="module")
def cpu(build_dir: Path) -> Deployment:
    return deploy(stack_config(build_dir, transcriber_gpu=False, transcriber_cpu=8,
                               transcriber_memory_gib=8, transcriber_concurrency=1,
                               transcriber_max_instances=50))


@pytest.fixture(scope="module")
def public_api(build_dir: Path) -> Deployment:
    return deploy(stack_config(build_dir, api_public=True,
                               api_invokers=("user:alice@example.com",),
                               web_google_client_id="1234-web.apps.googleusercontent.com",
                               web_users=("alice@example.com", "@example.org")))


@pytest.fixture(scope="module")
def review(build_dir: Path) -> Deployment:
    """Label Studio configured: the review function is public and its sync scheduled."""
    return deploy(stack_config(build_dir, label_studio_url=LABEL_STUDIO_URL,
                               label_studio_token=pulumi.Output.secret(LABEL_STUDIO_TOKEN),
                               review_secret=pulumi.Output.secret(REVIEW_SECRET),
                               review_audit_percent=12.5))
