"""Typed settings, read from the environment (prefix `AUDIARY_`) when a handler runs.

The standard Google variables (`GOOGLE_CLOUD_PROJECT`, `PUBSUB_EMULATOR_HOST`,
`FIRESTORE_EMULATOR_HOST`, `STORAGE_EMULATOR_HOST`) are honoured as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from audiary import names


class Settings(BaseSettings):
    """Every knob Audiary has. Frozen so that it can key the wiring cache."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIARY_", frozen=True, extra="ignore", populate_by_name=True
    )

    # Where things live.
    project_id: str = Field(
        default="audiary-local",
        validation_alias=AliasChoices("AUDIARY_PROJECT_ID", "GOOGLE_CLOUD_PROJECT"),
    )
    blob_backend: Literal["gcs", "s3", "memory"] = "gcs"
    job_backend: Literal["firestore", "memory"] = "firestore"
    publisher_backend: Literal["pubsub", "memory"] = "pubsub"

    pubsub_emulator_host: str | None = Field(
        default=None, validation_alias=AliasChoices("PUBSUB_EMULATOR_HOST")
    )
    firestore_emulator_host: str | None = Field(
        default=None, validation_alias=AliasChoices("FIRESTORE_EMULATOR_HOST")
    )
    storage_emulator_host: str | None = Field(
        default=None, validation_alias=AliasChoices("STORAGE_EMULATOR_HOST")
    )
    firestore_database: str = "(default)"

    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"

    uploads_bucket: str = names.BUCKET_UPLOADS
    work_bucket: str = names.BUCKET_WORK
    transcripts_bucket: str = names.BUCKET_TRANSCRIPTS
    feedback_bucket: str = names.BUCKET_USERFEEDBACK
    datasets_bucket: str = names.BUCKET_DATASETS
    models_bucket: str = names.BUCKET_MODELS
    inbox_prefix: str = names.PREFIX_INBOX
    quarantine_prefix: str = names.PREFIX_QUARANTINE

    topic_audio_uploaded: str = names.TOPIC_AUDIO_UPLOADED
    topic_transcribe_chunk: str = names.TOPIC_TRANSCRIBE_CHUNK
    topic_transcript_ready: str = names.TOPIC_TRANSCRIPT_READY
    topic_job_finished: str = names.TOPIC_JOB_FINISHED
    topic_webhook_delivery: str = names.TOPIC_WEBHOOK_DELIVERY
    topic_dataset_ready: str = names.TOPIC_DATASET_READY
    topic_transcript_corrected: str = names.TOPIC_TRANSCRIPT_CORRECTED

    jobs_collection: str = names.COLLECTION_JOBS
    notes_collection: str = names.COLLECTION_NOTES
    llm_cache_collection: str = names.COLLECTION_LLM_CACHE
    feedback_collection: str = names.COLLECTION_FEEDBACK
    api_keys_collection: str = names.COLLECTION_API_KEYS
    webhooks_collection: str = names.COLLECTION_WEBHOOKS
    deliveries_collection: str = names.COLLECTION_DELIVERIES
    tombstones_collection: str = names.COLLECTION_TOMBSTONES
    review_collection: str = names.COLLECTION_REVIEW
    datasets_collection: str = names.COLLECTION_DATASETS
    evaluations_collection: str = names.COLLECTION_EVALUATIONS
    models_collection: str = names.COLLECTION_MODELS

    # What ingest accepts.
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_duration_s: float = Field(default=4 * 3600.0, gt=0)
    min_duration_s: float = Field(default=0.5, ge=0)
    silence_dbfs: float = Field(
        default=-55.0, description="Audio whose peak stays below this level is rejected as silent."
    )

    max_attempts: int = Field(
        default=5, ge=1, description="Deliveries of one message before its job is FAILED."
    )
    # How long Pub/Sub waits for a push to be answered before it delivers the message again:
    # one chunk (or one ingest, one note) must finish within it. 600 s is Pub/Sub's maximum and
    # what Pulumi sets; a shorter one locally brings back sooner a push that went nowhere.
    ack_deadline_s: int = Field(default=600, ge=10, le=600)

    # How ingest splits the work: chunks of `chunk_target_s`, shorter when the served model's
    # real-time factor (measured, domain.chunking.REALTIME_FACTORS, or this override) says
    # that one would not decode well within the ack deadline.
    chunk_target_s: float = Field(default=300.0, gt=0)
    realtime_factor: float | None = Field(
        default=None, gt=0,
        description="Seconds of decoding per second of audio of the served model, if the "
                    "measured table does not know it (a trained or hub model on CPU).")
    chunk_search_s: float = Field(
        default=15.0, ge=0, description="How far around the target a cut may move to find silence."
    )

    # The speech model: `model_path` if set, else the registry's promoted model, else `model`.
    model_path: str | None = Field(
        default=None,
        description="A CTranslate2 model directory, gs:// or s3:// prefix, or hub name; "
                    "overrides the registry and `model`.",
    )
    engine: Literal["whisper", "null"] = Field(
        default="whisper",
        description="null hears nothing and answers at once: for measuring the orchestration "
                    "alone (bench control_plane), never for real audio.")
    model: str = Field(
        default="base",
        description="The model served when neither AUDIARY_MODEL_PATH nor a promotion says "
                    "otherwise: packaged tiny.en (English only, fastest), base (multilingual, "
                    "the default) or small, or a hub name where a network exists (large-v3, "
                    "large-v3-turbo, distil-large-v3).",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field(default="auto", description="auto = float16 on cuda, int8 on cpu.")
    cpu_threads: int = Field(
        default=0, ge=0, description="Threads per decode worker; 0: the cores shared out "
                                     "among the decode workers (on CPU).")
    # Beam 1 with batches of 16 windows is what makes the pipeline twice as fast as plain
    # faster-whisper (bench/long_form.py). Beam 5 on the 10-minute file: base 80 errors against
    # 59 (it drops more words), tiny.en 57 against 66 at 1.26 times the time.
    beam_size: int = Field(default=1, ge=1)
    batch_size: int = Field(default=16, ge=1, description="Most windows in one model call.")
    transcriber_concurrency: int = Field(
        default=4, ge=1, le=64,
        description="Requests one transcriber instance serves at once (gunicorn threads; "
                    "Cloud Run's concurrency).")
    # Concurrent chunks (the transcriber takes `transcriber_concurrency` at once) share model
    # calls: a window waits at most this long for others to join its call.
    batch_wait_ms: float = Field(default=20.0, ge=0)
    batch_across_requests: bool = Field(
        default=True, description="Let windows of different chunks share a model call.")
    # Off by default: on 2 CPU cores it saved no time (bench/throughput.py), and a chunk's
    # words then depend a little on other chunks', maybe other users', that shared its window.
    batch_merge_windows: bool = Field(
        default=False,
        description="With batch_across_requests: short windows of different chunks (a "
                    "chunk's last, a re-read) share one Whisper window, decoded with word "
                    "times that send each word back to its chunk.")
    decode_workers: int = Field(
        default=2, ge=1, description="Model copies decoding windows in parallel (one per core)."
    )
    language: str | None = None

    # Diary notes: providers are tried in this order; one without its key (or base URL) is
    # skipped, so with no key at all the offline extractive writer does the work.
    llm_providers: str = "openai,anthropic,openai-compatible,extractive"
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AUDIARY_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_model: str = "gpt-4o-mini"
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AUDIARY_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
    )
    anthropic_model: str = "claude-haiku-4-5"
    anthropic_base_url: str | None = None
    compatible_base_url: str | None = Field(
        default=None, description="An OpenAI-compatible server (vLLM, Ollama, LM Studio)."
    )
    compatible_api_key: SecretStr | None = None
    compatible_model: str = "llama3.1"
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_retries: int = Field(default=3, ge=0)
    breaker_failures: int = Field(default=3, ge=1, description="Consecutive failures to open.")
    breaker_cooldown_s: float = Field(default=60.0, gt=0)
    llm_cache_ttl_days: int = Field(default=90, ge=1, description="How long cached notes live.")
    llm_token_budget: int = Field(
        default=12_000, gt=0, description="Above this many transcript tokens: map-reduce."
    )
    llm_group_tokens: int = Field(default=6_000, gt=0)
    llm_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": (0.15, 0.60),
            "gpt-4o": (2.50, 10.00),
            "claude-haiku-4-5": (1.00, 5.00),
            "claude-sonnet-4-5": (3.00, 15.00),
        },
        description="USD per million (input, output) tokens, by model name.",
    )

    # HTTPS API.
    api_rate_per_s: float = Field(default=5.0, gt=0, description="Requests per second per key.")
    api_burst: int = Field(default=20, ge=1, description="Requests a key may make at once.")
    api_service_accounts: list[str] = Field(
        default_factory=list,
        description="Service accounts whose Google-signed ID tokens the API accepts.",
    )
    api_audience: str | None = Field(
        default=None, description="Expected `aud` of ID tokens: the API's URL."
    )
    google_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    # The web page's "Sign in with Google" (Google Identity Services): shown only when both
    # the OAuth client and the allowed people are set.
    web_google_client_id: str | None = Field(
        default=None,
        description="OAuth client ID of the page's Google sign-in (the ID tokens' `aud`).",
    )
    web_users: list[str] = Field(
        default_factory=list,
        description="Google accounts that may sign in to the page: emails, or @domain.",
    )
    web_google_script_url: str = Field(
        default="https://accounts.google.com/gsi/client",
        description="Where the page loads Google Identity Services from.",
    )
    upload_url_ttl_s: int = Field(default=900, ge=60, le=900)
    audio_url_max_bytes: int = Field(default=500 * 1024**2, gt=0)
    allow_private_urls: bool = Field(
        default=False, description="Development only: let audio_url reach private addresses."
    )
    allow_http_urls: bool = Field(
        default=False, description="Development only: accept http:// audio and webhook URLs."
    )
    webhook_attempts: int = Field(default=5, ge=1)
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Per attempt.")
    # How long one delivery holds its (hook, job, event): its attempts and backoff must fit.
    webhook_lease_s: float = Field(default=600.0, gt=0)
    sync_max_upload_bytes: int = Field(
        default=25 * 1024**2, gt=0,
        description="Largest file POST /v1/audio/transcriptions takes (OpenAI's own limit).",
    )
    sync_max_duration_s: float = Field(
        default=600.0, gt=0, description="Longest audio transcribed synchronously."
    )

    # On SIGTERM the transcriber finishes a chunk in flight within this, or hands it back
    # (Cloud Run kills the instance 10 s after SIGTERM).
    shutdown_grace_s: float = Field(default=7.0, ge=0)
    # How long the delivery writing a note holds the job (LLM calls with their retries must fit);
    # a duplicate message waits that long before it may take over from a holder that died.
    summarize_lease_s: float = Field(default=900.0, gt=0)
    # The sweeper (services.sweeper): a job with no progress for this long is re-driven once,
    # then FAILED after as long again. Longer than Pub/Sub's redelivery backoff (600 s at
    # most between tries) and the summarize lease.
    stall_after_s: float = Field(default=3600.0, gt=0)
    sweep_batch: int = Field(default=200, gt=0, description="Jobs one sweep looks at, at most.")

    # Review in Label Studio (services.review): the team's own server; unset, nothing is sent
    # and jobs are still queued for when it is.
    label_studio_url: str | None = Field(
        default=None, description="Label Studio's base URL, e.g. https://review.example.org.")
    label_studio_token: SecretStr | None = Field(
        default=None, description="A Label Studio API token (legacy token of the project owner).")
    review_project_title: str = "Audiary transcript review"
    review_secret: SecretStr | None = Field(
        default=None, description="Shared secret Label Studio's webhook sends "
        "(X-Audiary-Review-Secret), as may the sync's caller; unset: the receiver refuses all.")
    review_url: str | None = Field(
        default=None, description="Where Label Studio reaches the review receiver "
        "(the review function's URL); `audiary review setup` registers <this>/label-studio.")
    review_audit_percent: float = Field(
        default=5.0, ge=0, le=100,
        description="Share of confident jobs (no uncertain segment) sent to review anyway.")
    review_clip_pad_s: float = Field(default=0.5, ge=0, description="Audio kept around a span.")
    review_url_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=3600, le=7 * 24 * 3600,
        description="How long a task's audio URL works (7 days, GCS's longest); the sync "
        "signs it again for tasks still open after half of that.")
    review_sync_accounts: list[str] = Field(
        default_factory=list,
        description="Service accounts whose ID tokens may run the sync (Cloud Scheduler's).")

    # Datasets from corrections (services.datasets): the quality filters, the splits (by a
    # hash of the recording) and the train hours that make a dataset ready for training.
    dataset_min_clip_s: float = Field(default=1.0, ge=0)
    dataset_max_clip_s: float = Field(default=30.0, gt=0, le=30.0,
                                      description="Whisper's window: no clip is longer.")
    dataset_min_chars_per_s: float = Field(default=2.0, ge=0)
    dataset_max_chars_per_s: float = Field(default=30.0, gt=0)
    dataset_min_snr_db: float = Field(
        default=10.0, description="Loud frames over quiet frames, in dB (domain.datasets).")
    dataset_splits: tuple[float, float, float] = Field(
        default=(0.92, 0.04, 0.04), description="train, val, test shares.")
    dataset_ready_hours: float = Field(
        default=5.0, gt=0, description="Train hours that make a dataset ready.")
    dataset_build_interval_s: float = Field(
        default=3600.0, ge=0,
        description="The datasets function builds at most this often on the corrections "
        "stream; the schedule builds what is left.")

    # Training and promotion (audiary.learning): fine-tuning recipe, vocabulary candidate,
    # and the gate a candidate passes to be promoted.
    train_steps: int = Field(default=200, gt=0, description="Optimizer steps per run.")
    train_batch_size: int = Field(default=8, gt=0)
    train_grad_accum: int = Field(default=2, gt=0,
                                  description="Batches per optimizer step.")
    train_learning_rate: float = Field(default=1e-5, gt=0)
    train_warmup_steps: int = Field(default=20, ge=0)
    train_seed: int = 0
    training_enabled: bool = Field(
        default=True, description="Whether dataset-ready starts training (off on Google Cloud"
        " until a training job is deployed).")
    train_job: str | None = Field(
        default=None, description="Cloud Run job that trains (projects/P/locations/R/jobs/J);"
        " unset: `dataset-ready` starts `audiary train` as a local process.")
    vocabulary_min_count: int = Field(
        default=2, ge=1, description="Clips a term must be corrected in to become a hotword.")
    vocabulary_max_terms: int = Field(default=30, gt=0)
    promote_margin: float = Field(
        default=0.005, ge=0,
        description="WER a candidate must beat the promoted model by (0.005 = half a point).")
    promote_min_words: int = Field(
        default=50, ge=1, description="Reference words a test split needs for a decision.")
    promote_guard: Path | None = Field(
        default=None, description="A JSONL manifest of ordinary speech (audio relative to it, "
        "text) a candidate must not get worse on: corrections only hold what the model got "
        "wrong, so a candidate can learn them and forget the rest.")
    promote_guard_tolerance: float = Field(
        default=0.005, ge=0, description="How much worse on the guard set is still accepted.")

    # Native local stack.
    # How often the native stack's timer runs the sweeper (Cloud Scheduler: every 10 minutes).
    sweep_interval_s: float = Field(default=600.0, gt=0)
    # How often it runs the learning schedule (Cloud Scheduler: hourly): builds what the
    # corrections stream left waiting, trains on the newest ready dataset once.
    learning_interval_s: float = Field(default=3600.0, gt=0)
    # ... and the review sync (Cloud Scheduler: every minute).
    review_sync_interval_s: float = Field(default=60.0, gt=0)
    state_dir: Path = Path(".audiary")
    # The checkout whose functions/ and containers/ the native stack runs (make runs from it).
    project_dir: Path = Path(".")
    host: str = "127.0.0.1"
    pubsub_port: int = 8085
    firestore_port: int = 8086
    gcs_port: int = 9023
    ingest_port: int = 8091
    transcriber_port: int = 8092
    summarize_port: int = 8093
    api_port: int = 8094
    webhooks_port: int = 8095
    deadletters_port: int = 8096
    sweeper_port: int = 8097
    review_port: int = 8098
    learning_port: int = 8099
    watch_interval_s: float = Field(default=0.5, gt=0)
    # Where the stack's processes without a /metrics route of their own serve Prometheus
    # metrics (the transcriber and the api answer /metrics on their own ports).
    ingest_metrics_port: int = 9191
    summarize_metrics_port: int = 9193
    webhooks_metrics_port: int = 9195
    watcher_metrics_port: int = 9196
    deadletters_metrics_port: int = 9197
    sweeper_metrics_port: int = 9198
    review_metrics_port: int = 9199
    learning_metrics_port: int = 9200
    watch_stats_interval_s: float = Field(
        default=5.0, gt=0,
        description="How often the watcher counts dead letters and jobs per state.",
    )

    # Observability.
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Serve /metrics on this port from a process that has no route for it "
        "(the CloudEvent functions, the watcher); unset: no metrics server.",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address of that server; 0.0.0.0 in a container."
    )
    otel_exporter: Literal["none", "otlp", "gcp"] = Field(
        default="none",
        description="Where spans go: nowhere (trace ids still reach logs and messages), an "
        "OTLP/HTTP collector, or Cloud Trace.",
    )
    otel_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP base URL (e.g. http://127.0.0.1:4318); unset: the exporter's "
        "own default or OTEL_EXPORTER_OTLP_ENDPOINT.",
    )

    @model_validator(mode="after")
    def _check_backends(self) -> Settings:
        if self.blob_backend == "s3" and not self.s3_endpoint_url:
            raise ValueError("AUDIARY_BLOB_BACKEND=s3 needs AUDIARY_S3_ENDPOINT_URL")
        known = {"openai", "anthropic", "openai-compatible", "extractive"}
        if unknown := [p for p in self.provider_order if p not in known]:
            raise ValueError(
                f"AUDIARY_LLM_PROVIDERS names unknown providers {unknown}; use {sorted(known)}"
            )
        return self

    @property
    def provider_order(self) -> list[str]:
        return [p.strip() for p in self.llm_providers.split(",") if p.strip()]

    def resolved_model_path(self) -> str:
        """`model_path` if set, else the `model` name (a packaged model or a hub name)."""
        return self.model_path or self.model


def load_settings() -> Settings:
    """Read settings from the environment now (never at import time)."""
    return Settings()
