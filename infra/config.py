"""Every setting of the Pulumi program, read from the stack configuration in one place.

`load_config()` is the only code that touches `pulumi.Config`; the components get a
`StackConfig`, so tests can build any variant without a stack file. Keys and defaults are
documented in `infra/Pulumi.example.yaml`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi

from audiary import names
from audiary.domain.chunking import CHUNK_MARGIN, chunk_length_s, realtime_factor

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD_DIR = Path(__file__).resolve().parent / ".build"

# Pub/Sub's maximum ack deadline. Pushes are HTTP requests that Pub/Sub waits this long for, so
# one chunk (or one ingest, one note) must finish within it. The native local stack uses the
# same value; tests/infra compares the two.
ACK_DEADLINE_S = 600
# On CPU a chunk is transcribed in chunk length x real-time factor; it must fit the ack deadline
# this many times over (a slow instance, a retry of the model load), so the CPU chunk length is
# at most ACK_DEADLINE_S / (CPU_CHUNK_MARGIN x cpuRealtimeFactor).
CPU_CHUNK_MARGIN = CHUNK_MARGIN
DEFAULT_CHUNK_TARGET_S = 300.0  # audiary.settings.Settings.chunk_target_s
# Pub/Sub accepts 5..100 delivery attempts before dead-lettering.
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100
# Cloud Run with an NVIDIA L4 needs at least 4 CPUs and 16 GiB of memory.
GPU_MIN_CPU, GPU_MIN_MEMORY_GIB = 4, 16
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConfigError(ValueError):
    """The stack configuration is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class StackConfig:
    """What the program provisions; defaults are the documented ones."""

    project: str
    # Cloud Run offers nvidia-l4 here without an invitation (us-central1 may need one).
    region: str = "europe-west4"
    # Bucket names are global across all of Google Cloud, so each base name from
    # audiary.names gets this suffix (default: the project id, itself globally unique).
    bucket_suffix: str = ""
    bucket_location: str = ""
    work_ttl_days: int = 7
    force_destroy: bool = False
    firestore_location: str = ""

    transcriber_image: str | None = None
    transcriber_gpu: bool = True
    gpu_zonal_redundancy_disabled: bool = True
    transcriber_cpu: int = 4
    transcriber_memory_gib: int = 16
    transcriber_concurrency: int = 4
    transcriber_min_instances: int = 0
    transcriber_max_instances: int = 3
    model_path: str | None = None
    # The model served (AUDIARY_MODEL) when no modelPath or promotion says otherwise. On a GPU
    # large-v3-turbo: near large-v3's accuracy in 99 languages with 4 decoder layers instead of
    # 32, several times faster (it does not translate well: set large-v3 for translations).
    # On CPU base, the packaged multilingual model. Hub names are fetched on first start.
    model: str = ""

    @property
    def served_model(self) -> str:
        return self.model or ("large-v3-turbo" if self.transcriber_gpu else "base")
    # The training job (containers/trainer): deployed once an image is set (`make image`
    # builds the transcriber; the trainer is built the same way, see the README).
    trainer_image: str | None = None
    trainer_gpu: bool = True
    learning_schedule: str = "17 * * * *"  # hourly: build what waits, train once per dataset
    chunk_target_s: float | None = None
    # Seconds of CPU inference per second of audio for the model served on CPU; 0 means the
    # measured one of `model` (audiary.domain.chunking.REALTIME_FACTORS; unknown: 0.5).
    cpu_realtime_factor: float = 0.0
    # The sweeper: how often Cloud Scheduler runs it, and after how long without progress a job
    # is re-driven (then FAILED after as long again).
    sweep_schedule: str = "*/10 * * * *"
    stall_after_s: float = 3600.0

    max_delivery_attempts: int = 5
    functions_runtime: str = "python312"
    functions_max_instances: int = 20

    llm_providers: str | None = None
    openai_api_key: pulumi.Output[str] | None = None
    anthropic_api_key: pulumi.Output[str] | None = None

    api_public: bool = False
    api_invokers: tuple[str, ...] = ()
    api_service_accounts: tuple[str, ...] = ()
    # The web page's "Sign in with Google": its OAuth client ID and who may sign in.
    web_google_client_id: str | None = None
    web_users: tuple[str, ...] = ()

    # Review in Label Studio, the team's own server. Set, the review function takes Label
    # Studio's webhooks (it checks the shared secret itself) and Cloud Scheduler runs its sync;
    # unset, finished jobs are still queued for review, and nothing is sent.
    label_studio_url: str | None = None
    label_studio_token: pulumi.Output[str] | None = None
    review_secret: pulumi.Output[str] | None = None
    review_audit_percent: float = 5.0  # audiary.settings.Settings.review_audit_percent

    alert_emails: tuple[str, ...] = ()
    error_rate_threshold: float = 0.05

    build_dir: Path = DEFAULT_BUILD_DIR
    labels: dict[str, str] = field(default_factory=lambda: {"app": "audiary"})

    def __post_init__(self) -> None:
        # Empty means "derive": fill in here so every reader sees the final value.
        if not self.bucket_suffix:
            object.__setattr__(self, "bucket_suffix", self.project)
        if not self.bucket_location:
            object.__setattr__(self, "bucket_location", self.region.upper())
        if not self.firestore_location:
            object.__setattr__(self, "firestore_location", self.region)
        _validate(self)

    def bucket_name(self, base: str) -> str:
        """The global name of one of the buckets named in audiary.names."""
        return f"{base}-{self.bucket_suffix}"

    @property
    def uploads_bucket(self) -> str:
        return self.bucket_name(names.BUCKET_UPLOADS)

    @property
    def work_bucket(self) -> str:
        return self.bucket_name(names.BUCKET_WORK)

    @property
    def transcripts_bucket(self) -> str:
        return self.bucket_name(names.BUCKET_TRANSCRIPTS)

    @property
    def feedback_bucket(self) -> str:
        return self.bucket_name(names.BUCKET_USERFEEDBACK)

    @property
    def datasets_bucket(self) -> str:
        return self.bucket_name(names.BUCKET_DATASETS)

    @property
    def models_bucket(self) -> str:
        return self.bucket_name(names.BUCKET_MODELS)

    @property
    def sources_bucket(self) -> str:
        """Function source archives; not an application bucket, so not in audiary.names."""
        return self.bucket_name("audiary-sources")

    @property
    def api_origin(self) -> str:
        """Where the web page is served from (the API's origin)."""
        return f"https://{self.region}-{self.project}.cloudfunctions.net"

    @property
    def api_url(self) -> str:
        """The API's URL, known before it exists: gen2 functions get a deterministic one."""
        return f"{self.api_origin}/api"

    @property
    def review_url(self) -> str:
        """The review function's URL, known before it exists like `api_url`: the audience of
        the scheduler's ID tokens, which the function checks against its own environment."""
        return f"{self.api_origin}/review"

    @property
    def label_studio_origin(self) -> str | None:
        """Label Studio's origin as a browser sends it: scheme, host, and a port only when it
        is not the scheme's default."""
        if not self.label_studio_url:
            return None
        parts = urlsplit(self.label_studio_url)
        port = "" if parts.port in (None, _DEFAULT_PORTS[parts.scheme]) else f":{parts.port}"
        return f"{parts.scheme}://{parts.hostname}{port}"


def _validate(cfg: StackConfig) -> None:
    for base in (names.BUCKET_UPLOADS, names.BUCKET_WORK, names.BUCKET_TRANSCRIPTS,
                 names.BUCKET_USERFEEDBACK, names.BUCKET_DATASETS, names.BUCKET_MODELS,
                 "audiary-sources"):
        name = cfg.bucket_name(base)
        if not _BUCKET_NAME.match(name):
            raise ConfigError(
                f"bucket name {name!r} is not valid (lowercase letters, digits and '-', "
                "3-63 characters): set audiary:bucketSuffix to a shorter lowercase value"
            )
    if not MIN_DELIVERY_ATTEMPTS <= cfg.max_delivery_attempts <= MAX_DELIVERY_ATTEMPTS:
        raise ConfigError(
            f"audiary:maxDeliveryAttempts is {cfg.max_delivery_attempts}; Pub/Sub accepts "
            f"{MIN_DELIVERY_ATTEMPTS} to {MAX_DELIVERY_ATTEMPTS}"
        )
    if cfg.transcriber_gpu and (
        cfg.transcriber_cpu < GPU_MIN_CPU or cfg.transcriber_memory_gib < GPU_MIN_MEMORY_GIB
    ):
        raise ConfigError(
            f"a GPU transcriber needs at least {GPU_MIN_CPU} CPUs and {GPU_MIN_MEMORY_GIB} GiB; "
            f"got {cfg.transcriber_cpu} CPUs and {cfg.transcriber_memory_gib} GiB "
            "(audiary:transcriberCpu, audiary:transcriberMemoryGib)"
        )
    if not 0 <= cfg.transcriber_min_instances <= cfg.transcriber_max_instances:
        raise ConfigError(
            "audiary:transcriberMinInstances must be between 0 and "
            f"audiary:transcriberMaxInstances ({cfg.transcriber_max_instances})"
        )
    if cfg.transcriber_concurrency < 1:
        raise ConfigError("audiary:transcriberConcurrency must be at least 1")
    if public := PUBLIC_MEMBERS.intersection(cfg.api_invokers):
        raise ConfigError(
            f"audiary:apiInvokers lists {sorted(public)}; set audiary:apiPublic true instead, "
            "so that a public API is a deliberate, visible choice"
        )
    if cfg.web_google_client_id and not cfg.web_users:
        raise ConfigError(
            "audiary:webGoogleClientId is set but audiary:webUsers is empty: list the emails "
            "(or @domains) that may sign in to the page")
    if cfg.web_google_client_id and not cfg.api_public:
        raise ConfigError(
            "audiary:webGoogleClientId needs audiary:apiPublic true: a browser cannot pass "
            "Cloud Run IAM, the API checks the Google sign-in itself")
    _validate_review(cfg)
    if cfg.work_ttl_days < 1:
        raise ConfigError("audiary:workTtlDays must be at least 1")
    if cfg.cpu_realtime_factor < 0:
        raise ConfigError("audiary:cpuRealtimeFactor must be above 0 (or 0: the measured one)")
    cap = cpu_chunk_limit_s(cfg)
    if not cfg.transcriber_gpu and cfg.chunk_target_s is not None and cfg.chunk_target_s > cap:
        raise ConfigError(
            f"audiary:chunkTargetS is {cfg.chunk_target_s:g} s, but on CPU (real-time factor "
            f"{cpu_realtime_factor(cfg):g}, {cfg.transcriber_concurrency} at once) a chunk must "
            f"take at most 1/{CPU_CHUNK_MARGIN:g} of the {ACK_DEADLINE_S} s ack deadline: use "
            f"at most {cap:g} s"
        )
    if cfg.stall_after_s < 2 * ACK_DEADLINE_S:
        raise ConfigError(
            f"audiary:stallAfterS is {cfg.stall_after_s:g} s; a healthy job can be silent for "
            f"an ack deadline and a redelivery backoff: use at least {2 * ACK_DEADLINE_S} s"
        )


def _validate_review(cfg: StackConfig) -> None:
    if not 0 <= cfg.review_audit_percent <= 100:
        raise ConfigError(
            f"audiary:reviewAuditPercent is {cfg.review_audit_percent:g}; it is a share of "
            "confident jobs: use 0 to 100")
    if not cfg.label_studio_url:
        return
    if not _is_base_url(cfg.label_studio_url):
        raise ConfigError(
            f"audiary:labelStudioUrl is {cfg.label_studio_url!r}; it must be Label Studio's "
            "base URL, e.g. https://review.example.org")
    # Key -> (its value, what to set it to).
    needed = {
        "labelStudioToken": (cfg.label_studio_token, "<a legacy API token of the Label Studio "
                             "project owner>"),
        "reviewSecret": (cfg.review_secret, '"$(openssl rand -hex 24)"'),
    }
    if missing := [key for key, (value, _) in needed.items() if value is None]:
        raise ConfigError(
            "audiary:labelStudioUrl is set, so the review function needs "
            f"{' and '.join(f'audiary:{key}' for key in missing)}: "
            + "; ".join(f"pulumi config set --secret audiary:{key} {needed[key][1]}"
                        for key in missing))


def _is_base_url(url: str) -> bool:
    parts = urlsplit(url)
    try:
        _ = parts.port  # a port that is no number from 0 to 65535 raises
    except ValueError:
        return False
    return parts.scheme in _DEFAULT_PORTS and bool(parts.hostname)


def cpu_realtime_factor(cfg: StackConfig) -> float:
    """The configured CPU real-time factor, else the measured one of the model."""
    return cfg.cpu_realtime_factor or realtime_factor(cfg.served_model, "cpu")


def cpu_chunk_limit_s(cfg: StackConfig) -> float:
    """The longest chunk whose CPU inference fits the ack deadline with the margin, while
    `transcriberConcurrency` chunks share the instance (as ingest computes it at run time)."""
    return float(int(chunk_length_s(
        float("inf"), realtime_factor=cpu_realtime_factor(cfg), ack_deadline_s=ACK_DEADLINE_S,
        concurrency=cfg.transcriber_concurrency, margin=CPU_CHUNK_MARGIN)))


def chunk_target_s(cfg: StackConfig) -> float | None:
    """The chunk length ingest is given: the configured one, else on CPU the default capped
    so that one chunk fits the ack deadline (None: the settings' default)."""
    if cfg.chunk_target_s is not None or cfg.transcriber_gpu:
        return cfg.chunk_target_s
    return min(DEFAULT_CHUNK_TARGET_S, cpu_chunk_limit_s(cfg))


def _strings(config: pulumi.Config, key: str) -> tuple[str, ...]:
    value: Any = config.get_object(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"audiary:{key} must be a list of strings")
    return tuple(value)


def load_config() -> StackConfig:
    """Read the stack's configuration (namespaces `gcp` and `audiary`)."""
    gcp = pulumi.Config("gcp")
    cfg = pulumi.Config("audiary")
    project = gcp.get("project")
    if not project:
        raise ConfigError("gcp:project is not set: pulumi config set gcp:project <project-id>")
    region = cfg.get("region") or gcp.get("region") or StackConfig.region
    gpu = cfg.get_bool("transcriberGpu", True)
    audit_percent = cfg.get_float("reviewAuditPercent")  # 0 is a value: no `or` default
    return StackConfig(
        project=project,
        region=region,
        bucket_suffix=cfg.get("bucketSuffix") or "",
        bucket_location=cfg.get("bucketLocation") or "",
        work_ttl_days=cfg.get_int("workTtlDays") or StackConfig.work_ttl_days,
        force_destroy=cfg.get_bool("forceDestroy", False),
        firestore_location=cfg.get("firestoreLocation") or "",
        transcriber_image=cfg.get("transcriberImage"),
        transcriber_gpu=gpu,
        gpu_zonal_redundancy_disabled=cfg.get_bool("gpuZonalRedundancyDisabled", True),
        transcriber_cpu=cfg.get_int("transcriberCpu") or StackConfig.transcriber_cpu,
        transcriber_memory_gib=(
            cfg.get_int("transcriberMemoryGib") or StackConfig.transcriber_memory_gib
        ),
        # One CPU instance is busy with one chunk; a GPU instance overlaps a few.
        transcriber_concurrency=cfg.get_int("transcriberConcurrency") or (4 if gpu else 1),
        transcriber_min_instances=cfg.get_int("transcriberMinInstances") or 0,
        transcriber_max_instances=(
            cfg.get_int("transcriberMaxInstances") or StackConfig.transcriber_max_instances
        ),
        model_path=cfg.get("modelPath"),
        model=cfg.get("model") or "",
        trainer_image=cfg.get("trainerImage"),
        trainer_gpu=cfg.get_bool("trainerGpu", True),
        learning_schedule=cfg.get("learningSchedule") or StackConfig.learning_schedule,
        chunk_target_s=cfg.get_float("chunkTargetS"),
        cpu_realtime_factor=(
            cfg.get_float("cpuRealtimeFactor") or StackConfig.cpu_realtime_factor
        ),
        sweep_schedule=cfg.get("sweepSchedule") or StackConfig.sweep_schedule,
        stall_after_s=cfg.get_float("stallAfterS") or StackConfig.stall_after_s,
        max_delivery_attempts=(
            cfg.get_int("maxDeliveryAttempts") or StackConfig.max_delivery_attempts
        ),
        functions_runtime=cfg.get("functionsRuntime") or StackConfig.functions_runtime,
        functions_max_instances=(
            cfg.get_int("functionsMaxInstances") or StackConfig.functions_max_instances
        ),
        llm_providers=cfg.get("llmProviders"),
        openai_api_key=cfg.get_secret("openaiApiKey"),
        anthropic_api_key=cfg.get_secret("anthropicApiKey"),
        api_public=cfg.get_bool("apiPublic", False),
        api_invokers=_strings(cfg, "apiInvokers"),
        api_service_accounts=_strings(cfg, "apiServiceAccounts"),
        web_google_client_id=cfg.get("webGoogleClientId"),
        web_users=_strings(cfg, "webUsers"),
        label_studio_url=cfg.get("labelStudioUrl"),
        label_studio_token=cfg.get_secret("labelStudioToken"),
        review_secret=cfg.get_secret("reviewSecret"),
        review_audit_percent=(
            StackConfig.review_audit_percent if audit_percent is None else audit_percent
        ),
        alert_emails=_strings(cfg, "alertEmails"),
        error_rate_threshold=(
            cfg.get_float("errorRateThreshold") or StackConfig.error_rate_threshold
        ),
        build_dir=DEFAULT_BUILD_DIR,
    )
