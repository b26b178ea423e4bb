"""Stack configuration: one loader, documented defaults, clear errors; the entry point runs."""

from __future__ import annotations

import re
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.infra.mocks import MOCKS, PROJECT, activate

activate()  # before the program modules are imported

from infra import config as infra_config  # noqa: E402
from infra.config import ConfigError, StackConfig, load_config  # noqa: E402

pytestmark = pytest.mark.infra

INFRA = Path(infra_config.__file__).parent


@pytest.fixture
def stack_settings() -> Iterator[None]:
    """Each test starts from an empty stack configuration; the previous one is restored."""
    from pulumi.runtime.config import CONFIG

    saved = dict(CONFIG.get())
    pulumi.runtime.set_all_config({})
    yield
    pulumi.runtime.set_all_config(saved)


def apply(settings: dict[str, str]) -> None:
    for key, value in settings.items():
        pulumi.runtime.set_config(key, value)


def test_defaults(stack_settings: None) -> None:
    apply({"gcp:project": PROJECT})
    cfg = load_config()
    assert cfg.region == "europe-west4"
    assert cfg.bucket_suffix == PROJECT
    assert cfg.uploads_bucket == f"audiary-uploads-{PROJECT}"
    assert cfg.transcriber_gpu
    assert cfg.gpu_zonal_redundancy_disabled
    assert (cfg.transcriber_cpu, cfg.transcriber_memory_gib) == (4, 16)
    assert (cfg.transcriber_min_instances, cfg.transcriber_max_instances) == (0, 3)
    assert cfg.max_delivery_attempts == 5
    assert not cfg.api_public
    assert cfg.api_invokers == ()
    assert cfg.openai_api_key is None
    assert cfg.transcriber_image is None
    assert cfg.label_studio_url is None
    assert cfg.label_studio_origin is None
    assert (cfg.label_studio_token, cfg.review_secret) == (None, None)
    assert cfg.review_audit_percent == 5.0
    assert cfg.review_url == f"https://europe-west4-{PROJECT}.cloudfunctions.net/review"


def test_values_are_read_with_their_types(stack_settings: None) -> None:
    apply({
        "gcp:project": PROJECT, "gcp:region": "europe-west4",
        "audiary:bucketSuffix": "acme-dev", "audiary:transcriberGpu": "false",
        "audiary:transcriberCpu": "8", "audiary:transcriberMaxInstances": "40",
        "audiary:maxDeliveryAttempts": "10", "audiary:apiInvokers": '["user:a@example.com"]',
        "audiary:openaiApiKey": "sk-from-config",
        "audiary:labelStudioUrl": "https://review.example.org",
        "audiary:labelStudioToken": "ls-token", "audiary:reviewSecret": "shared",
        "audiary:reviewAuditPercent": "0",
    })
    cfg = load_config()
    assert cfg.region == "europe-west4"
    assert cfg.work_bucket == "audiary-work-acme-dev"
    assert not cfg.transcriber_gpu
    assert cfg.transcriber_cpu == 8
    assert cfg.transcriber_concurrency == 1  # the CPU default
    assert cfg.transcriber_max_instances == 40
    assert cfg.max_delivery_attempts == 10
    assert cfg.api_invokers == ("user:a@example.com",)
    assert cfg.openai_api_key is not None
    assert cfg.label_studio_url == "https://review.example.org"
    assert cfg.review_audit_percent == 0  # no audit draw: not replaced by the default


@pulumi.runtime.test
def test_llm_keys_and_review_secrets_are_read_as_secrets(
        stack_settings: None) -> pulumi.Output[Any]:
    apply({"gcp:project": PROJECT, "audiary:anthropicApiKey": "sk-ant-x",
           "audiary:labelStudioUrl": "https://review.example.org",
           "audiary:labelStudioToken": "ls-token", "audiary:reviewSecret": "shared"})
    cfg = load_config()
    values = (cfg.anthropic_api_key, cfg.label_studio_token, cfg.review_secret)

    async def check() -> None:
        for value in values:
            assert value is not None
            assert await value.is_secret()

    return pulumi.Output.from_input(check())


@pytest.mark.parametrize(("overrides", "message"), [
    ({"bucket_suffix": "Not_Valid"}, "audiary:bucketSuffix"),
    ({"max_delivery_attempts": 3}, "maxDeliveryAttempts"),
    ({"transcriber_cpu": 2}, "at least 4 CPUs"),
    ({"transcriber_memory_gib": 8}, "16 GiB"),
    ({"api_invokers": ("allUsers",)}, "apiPublic"),
    ({"api_invokers": ("allAuthenticatedUsers",)}, "apiPublic"),
    ({"transcriber_min_instances": 5}, "transcriberMinInstances"),
    ({"web_google_client_id": "x.apps.googleusercontent.com", "api_public": True},
     "webUsers is empty"),
    ({"web_google_client_id": "x.apps.googleusercontent.com", "web_users": ("a@b.org",)},
     "needs audiary:apiPublic true"),
    ({"review_audit_percent": 101.0}, r"reviewAuditPercent is 101; .* use 0 to 100"),
    ({"review_audit_percent": -1.0}, "reviewAuditPercent is -1"),
])
def test_invalid_values_say_what_to_change(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StackConfig(project=PROJECT, **overrides)


@pytest.mark.parametrize(("token", "secret", "missing"), [
    (False, False, ["labelStudioToken", "reviewSecret"]),
    (True, False, ["reviewSecret"]),
    (False, True, ["labelStudioToken"]),
])
def test_label_studio_needs_its_token_and_the_shared_secret(
        token: bool, secret: bool, missing: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        StackConfig(project=PROJECT, label_studio_url="https://review.example.org",
                    label_studio_token=pulumi.Output.secret("t") if token else None,
                    review_secret=pulumi.Output.secret("s") if secret else None)
    message = str(error.value)
    assert message.startswith("audiary:labelStudioUrl is set, so the review function needs "
                              + " and ".join(f"audiary:{key}" for key in missing) + ":")
    for key in ("labelStudioToken", "reviewSecret"):
        assert (f"pulumi config set --secret audiary:{key} " in message) == (key in missing)


@pytest.mark.parametrize("url", [
    "review.example.org", "ftp://review.example.org", "https://", "https://review:99999/"])
def test_label_studio_url_must_be_a_base_url(url: str) -> None:
    with pytest.raises(ConfigError, match="must be Label Studio's base URL"):
        StackConfig(project=PROJECT, label_studio_url=url,
                    label_studio_token=pulumi.Output.secret("t"),
                    review_secret=pulumi.Output.secret("s"))


@pytest.mark.parametrize(("url", "origin"), [
    ("https://Review.Example.org/", "https://review.example.org"),
    ("https://review.example.org:443/label-studio", "https://review.example.org"),
    ("http://ls.internal:8080", "http://ls.internal:8080"),
])
def test_the_cors_origin_is_label_studios_as_a_browser_sends_it(url: str, origin: str) -> None:
    cfg = StackConfig(project=PROJECT, label_studio_url=url,
                      label_studio_token=pulumi.Output.secret("t"),
                      review_secret=pulumi.Output.secret("s"))
    assert cfg.label_studio_origin == origin


def test_a_cpu_transcriber_may_be_small() -> None:
    cfg = StackConfig(project=PROJECT, transcriber_gpu=False, transcriber_cpu=2,
                      transcriber_memory_gib=4)
    assert cfg.transcriber_cpu == 2


def test_missing_project_is_explained(stack_settings: None) -> None:
    with pytest.raises(ConfigError, match="pulumi config set gcp:project"):
        load_config()


def test_example_stack_file_documents_every_key(stack_settings: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    read: set[str] = set()

    class Recording(pulumi.Config):
        def full_key(self, key: str) -> str:
            read.add(f"{self.name}:{key}")
            return super().full_key(key)

    monkeypatch.setattr(pulumi, "Config", Recording)
    apply({"gcp:project": PROJECT})
    load_config()
    text = (INFRA / "Pulumi.example.yaml").read_text()
    example = set(yaml.safe_load(text)["config"])
    # Secret keys are documented in comments: a placeholder ciphertext would not decrypt.
    commented = set(re.findall(r"^\s*#.*?\b((?:gcp|audiary):[A-Za-z]+)", text, re.M))
    assert read <= example | commented, read - example - commented
    assert example <= read, example - read
    project = yaml.safe_load((INFRA / "Pulumi.yaml").read_text())
    assert project["name"] == "audiary"
    assert project["runtime"]["name"] == "python"


def test_cloud_build_builds_the_transcriber_dockerfile() -> None:
    recipe = yaml.safe_load((INFRA / "cloudbuild.yaml").read_text())
    (step,) = recipe["steps"]
    dockerfile = step["args"][step["args"].index("-f") + 1]
    assert (INFRA.parent / dockerfile).is_file()
    assert step["args"][-1] == "."  # the repository root is the build context
    assert recipe["images"] == ["${_IMAGE}"]


def test_the_entry_point_runs_the_program(stack_settings: None, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    apply({"gcp:project": PROJECT,
                             "audiary:transcriberImage": "example/transcriber:1"})
    monkeypatch.setattr(infra_config, "DEFAULT_BUILD_DIR", tmp_path)
    activate()
    MOCKS.resources.clear()
    namespace: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        namespace.update(runpy.run_path(str(INFRA / "__main__.py"), run_name="__main__"))
        return pulumi.Output.all(*namespace["stack"].outputs.values())

    run()
    assert {r.inputs.get("name") for r in MOCKS.resources
            if r.typ == "gcp:cloudrunv2/service:Service"} == {"transcriber"}
    # ingest, summarize, webhooks, deadletters, sweeper, api, review
    assert len(list(tmp_path.glob("*.zip"))) == 8


def test_a_cpu_chunk_fits_the_ack_deadline_three_times_over() -> None:
    from audiary.domain.chunking import REALTIME_FACTORS
    from infra.config import chunk_target_s, cpu_chunk_limit_s

    slow = StackConfig(project=PROJECT, transcriber_gpu=False, cpu_realtime_factor=1.0,
                       transcriber_concurrency=1)
    assert cpu_chunk_limit_s(slow) == 200  # 600 s / (3 x 1.0)
    assert chunk_target_s(slow) == 200  # the default 300 s, capped
    shared = StackConfig(project=PROJECT, transcriber_gpu=False, cpu_realtime_factor=1.0,
                         transcriber_concurrency=4)
    assert cpu_chunk_limit_s(shared) == 50  # four chunks at once: each takes four times longer
    fast = StackConfig(project=PROJECT, transcriber_gpu=False, cpu_realtime_factor=0.1,
                       transcriber_concurrency=1)
    assert chunk_target_s(fast) == 300  # the default fits: kept
    # Without a factor, the measured one of the served model (base on CPU).
    measured = StackConfig(project=PROJECT, transcriber_gpu=False, transcriber_concurrency=1)
    assert measured.served_model == "base"
    assert cpu_chunk_limit_s(measured) == int(600 / (3 * REALTIME_FACTORS[("base", "cpu")]))
    assert chunk_target_s(StackConfig(project=PROJECT)) is None  # on GPU: the settings' own
    assert StackConfig(project=PROJECT).served_model == "large-v3-turbo"
    with pytest.raises(ConfigError, match="use at most 200 s"):
        StackConfig(project=PROJECT, transcriber_gpu=False, cpu_realtime_factor=1.0,
                    transcriber_concurrency=1, chunk_target_s=250)


def test_ingest_gets_the_capped_chunk_length_on_cpu(cpu) -> None:
    ingest = cpu.one("gcp:cloudfunctionsv2/function:Function", name="ingest").inputs
    env = ingest["serviceConfig"]["environmentVariables"]
    assert env["AUDIARY_CHUNK_TARGET_S"] == "300"
    # What ingest sizes chunks for at run time: the transcriber's model, device and concurrency.
    transcriber = cpu.one("gcp:cloudrunv2/service:Service", name="transcriber").inputs
    served = {e["name"]: e.get("value") for e in transcriber["template"]["containers"][0]["envs"]}
    for name in ("AUDIARY_MODEL", "AUDIARY_TRANSCRIBER_CONCURRENCY"):
        assert env[name] == served[name], name
    assert (env["AUDIARY_MODEL"], env["AUDIARY_DEVICE"]) == ("base", served["AUDIARY_DEVICE"])


def test_a_stall_time_shorter_than_a_healthy_silence_is_refused() -> None:
    with pytest.raises(ConfigError, match="stallAfterS is 600 s"):
        StackConfig(project=PROJECT, stall_after_s=600)
