"""The composition root: the one module that picks adapters from settings.

Adapters hold network clients, so they are built once per process and per settings value;
a handler calls `stores(load_settings())` each time it runs, which costs a digest and a
dictionary look-up after the first call. Heavy adapters (faster-whisper, the LLM SDKs) are
imported only when settings ask for them, so a function that never needs them never loads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import SecretStr

from audiary.ports import (
    BlobStore,
    JobStore,
    KeyStore,
    LlmClient,
    NoteStore,
    NoteWriter,
    Publisher,
    ReviewDesk,
    Stores,
    TrainingLauncher,
    Transcriber,
)
from audiary.services.notes.breaker import CircuitBreaker
from audiary.services.notes.llm_writer import LlmNoteWriter
from audiary.services.notes.router import NoteRouter, Provider
from audiary.settings import Settings

if TYPE_CHECKING:
    from audiary.adapters.url_fetcher import SafeUrlFetcher
    from audiary.services.models import ServingModel

__all__ = ["note_router", "publisher", "settings_digest", "stores", "transcriber"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_built: dict[tuple[str, str], object] = {}
_lock = threading.RLock()


def settings_digest(settings: Settings) -> str:
    """Equal for equal settings (secrets included, but only as part of a hash)."""
    values = {
        k: v.get_secret_value() if isinstance(v, SecretStr) else v
        for k, v in settings.model_dump().items()
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _once(kind: str, settings: Settings, build: Callable[[], T]) -> T:
    """`build()` on first use for these settings, the same object afterwards."""
    key = (kind, settings_digest(settings))
    with _lock:
        if key not in _built:
            _built[key] = build()
        return _built[key]  # type: ignore[return-value]


def _blob_store(settings: Settings) -> BlobStore:
    if settings.blob_backend == "memory":
        from audiary.adapters.memory import MemoryBlobStore

        return MemoryBlobStore()
    if settings.blob_backend == "s3":
        from audiary.adapters.s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    from audiary.adapters.gcs import GcsBlobStore

    return GcsBlobStore.from_settings(settings)


def _publisher(settings: Settings) -> Publisher:
    if settings.publisher_backend == "memory":
        from audiary.adapters.memory import MemoryPublisher

        return MemoryPublisher()
    from audiary.adapters.pubsub import PubSubPublisher

    return PubSubPublisher.from_settings(settings)


def _job_store(settings: Settings) -> JobStore:
    if settings.job_backend == "memory":
        from audiary.adapters.memory import MemoryJobStore

        return MemoryJobStore()
    from audiary.adapters.firestore import FirestoreJobStore

    return FirestoreJobStore.from_settings(settings)


def _note_store(settings: Settings) -> NoteStore:
    if settings.job_backend == "memory":
        from audiary.adapters.memory import MemoryNoteStore

        return MemoryNoteStore()
    from audiary.adapters.firestore import FirestoreNoteStore

    return FirestoreNoteStore.from_settings(settings)


def _key_store(settings: Settings) -> KeyStore:
    if settings.job_backend == "memory":
        from audiary.adapters.memory import MemoryKeyStore

        return MemoryKeyStore()
    from audiary.adapters.firestore import FirestoreKeyStore

    return FirestoreKeyStore.from_settings(settings)


def _safe_fetcher(settings: Settings) -> SafeUrlFetcher:
    """The SSRF-safe fetcher with the URL policy from settings."""
    from audiary.adapters.url_fetcher import SafeUrlFetcher

    return SafeUrlFetcher(allow_private=settings.allow_private_urls,
                          allow_http=settings.allow_http_urls)


def _stores(settings: Settings) -> Stores:
    from audiary.adapters.webhook_sender import HttpWebhookSender

    urls = _safe_fetcher(settings)
    return Stores(
        settings=settings,
        blobs=_blob_store(settings),
        publisher=_publisher(settings),
        jobs=_job_store(settings),
        notes=_note_store(settings),
        keys=_key_store(settings),
        webhooks=HttpWebhookSender(urls, attempts=settings.webhook_attempts,
                                   timeout_s=settings.webhook_timeout_s),
        urls=urls,
    )


def stores(settings: Settings) -> Stores:
    """Adapters for `settings`, built on first use and shared afterwards."""
    return _once("stores", settings, lambda: _stores(settings))


def publisher(settings: Settings) -> Publisher:
    """The publisher of `stores(settings)`, for processes that only publish (the MinIO bridge)."""
    return stores(settings).publisher


def _note_writers(settings: Settings) -> list[NoteWriter]:
    """The configured order, minus providers that lack a key or address (logged)."""
    s = settings
    found: list[NoteWriter] = []

    def llm(client: LlmClient) -> NoteWriter:
        return LlmNoteWriter(client, provider=name, token_budget=s.llm_token_budget,
                             group_tokens=s.llm_group_tokens)

    for name in s.provider_order:
        if name == "openai" and s.openai_api_key:
            from audiary.adapters.llm_openai import OpenAiClient

            found.append(llm(OpenAiClient(
                s.openai_api_key.get_secret_value(), s.openai_model,
                base_url=s.openai_base_url, timeout_s=s.llm_timeout_s,
                max_retries=s.llm_max_retries,
            )))
        elif name == "anthropic" and s.anthropic_api_key:
            from audiary.adapters.llm_anthropic import AnthropicClient

            found.append(llm(AnthropicClient(
                s.anthropic_api_key.get_secret_value(), s.anthropic_model,
                base_url=s.anthropic_base_url, timeout_s=s.llm_timeout_s,
                max_retries=s.llm_max_retries,
            )))
        elif name == "openai-compatible" and s.compatible_base_url:
            from audiary.adapters.llm_openai import OpenAiClient

            key = s.compatible_api_key.get_secret_value() if s.compatible_api_key else "none"
            found.append(llm(OpenAiClient(
                key, s.compatible_model, base_url=s.compatible_base_url,
                timeout_s=s.llm_timeout_s, max_retries=s.llm_max_retries,
                provider="openai-compatible",
            )))
        elif name == "extractive":
            from audiary.adapters.extractive import ExtractiveNoteWriter

            found.append(ExtractiveNoteWriter())
        else:
            log.info("provider %s skipped: no key or base URL configured", name)
    return found


def note_router(settings: Settings) -> NoteRouter:
    """The router for `settings`; one per process, so circuit breakers remember failures."""

    def build() -> NoteRouter:
        return NoteRouter(
            providers=[
                Provider(writer, CircuitBreaker(settings.breaker_failures,
                                                settings.breaker_cooldown_s))
                for writer in _note_writers(settings)
            ],
            store=stores(settings).notes,
            prices=settings.llm_prices,
        )

    return _once("note_router", settings, build)


def transcriber(settings: Settings, model: ServingModel | None = None, *,
                svc: Stores | None = None) -> Transcriber:
    """faster-whisper with the model to serve (services.models.serving_model: the setting,
    else the registry's promoted model, else the packaged default), copied from its bucket
    first if it lives in one.

    Not cached: the transcriber service loads it once, in the background (`ModelHolder`), so
    a promotion is picked up on the next start. `model` names another one (an evaluation's);
    `svc` the stores to read the registry and the models bucket from.
    """
    from audiary.adapters.model_store import materialize
    from audiary.adapters.null_engine import NullTranscriber
    from audiary.adapters.whisper.engine import WhisperTranscriber
    from audiary.services.models import serving_model

    if settings.engine == "null":
        return NullTranscriber()

    svc = svc or stores(settings)
    choice = model or serving_model(svc)
    location = materialize(choice.location, svc.blobs, settings.state_dir)
    engine = WhisperTranscriber.from_settings(
        settings.model_copy(update={"model_path": location}), hotwords=choice.hotwords)
    engine.model_name = choice.name
    return engine


def training_launcher(settings: Settings) -> TrainingLauncher:
    """The Cloud Run training job at `AUDIARY_TRAIN_JOB`, else `audiary train` as a local
    process (the native stack)."""
    from audiary.adapters.training_launcher import CloudRunJobLauncher, ProcessLauncher

    if settings.train_job:
        return CloudRunJobLauncher(settings.train_job)
    return ProcessLauncher(settings.state_dir)


def review_desk(settings: Settings) -> ReviewDesk:
    """Label Studio at `AUDIARY_LABEL_STUDIO_URL`; `ReviewDeskError` if it is not configured."""
    from audiary.adapters.label_studio import LabelStudioDesk

    return LabelStudioDesk.from_settings(settings)
