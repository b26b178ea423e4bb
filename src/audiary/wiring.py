"""The one place that picks adapters from settings.

Adapters hold network clients, so they are built once per process and per settings value;
a handler calls `services(load_settings())` each time it runs, which costs a digest and a
dictionary look-up after the first call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass

from pydantic import SecretStr

from audiary.notes.breaker import CircuitBreaker
from audiary.notes.router import NoteRouter, Provider
from audiary.ports import BlobStore, JobStore, KeyStore, LlmClient, NoteStore, Publisher
from audiary.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: Settings
    blobs: BlobStore
    publisher: Publisher
    jobs: JobStore
    notes: NoteStore
    keys: KeyStore


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


_built: dict[str, Services] = {}
_lock = threading.Lock()


def settings_digest(settings: Settings) -> str:
    """Equal for equal settings (secrets included, but only as part of a hash)."""
    values = {
        k: v.get_secret_value() if isinstance(v, SecretStr) else v
        for k, v in settings.model_dump().items()
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def services(settings: Settings) -> Services:
    """Adapters for `settings`, built on first use and shared afterwards."""
    key = settings_digest(settings)
    with _lock:
        if key not in _built:
            _built[key] = Services(
                settings=settings,
                blobs=_blob_store(settings),
                publisher=_publisher(settings),
                jobs=_job_store(settings),
                notes=_note_store(settings),
                keys=_key_store(settings),
            )
        return _built[key]



def _llm_providers(settings: Settings) -> list[Provider]:
    """The configured order, minus providers that lack a key or address (logged)."""
    s = settings
    found: list[Provider] = []

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(s.breaker_failures, s.breaker_cooldown_s)

    for name in s.provider_order:
        if name == "openai" and s.openai_api_key:
            from audiary.adapters.llm_openai import OpenAiClient

            client: LlmClient | None = OpenAiClient(
                s.openai_api_key.get_secret_value(), s.openai_model,
                base_url=s.openai_base_url, timeout_s=s.llm_timeout_s,
                max_retries=s.llm_max_retries,
            )
            found.append(Provider(name, s.openai_model, client, breaker()))
        elif name == "anthropic" and s.anthropic_api_key:
            from audiary.adapters.llm_anthropic import AnthropicClient

            client = AnthropicClient(
                s.anthropic_api_key.get_secret_value(), s.anthropic_model,
                base_url=s.anthropic_base_url, timeout_s=s.llm_timeout_s,
                max_retries=s.llm_max_retries,
            )
            found.append(Provider(name, s.anthropic_model, client, breaker()))
        elif name == "openai-compatible" and s.compatible_base_url:
            from audiary.adapters.llm_openai import OpenAiClient

            key = s.compatible_api_key.get_secret_value() if s.compatible_api_key else "none"
            client = OpenAiClient(
                key, s.compatible_model, base_url=s.compatible_base_url,
                timeout_s=s.llm_timeout_s, max_retries=s.llm_max_retries,
                provider="openai-compatible",
            )
            found.append(Provider(name, s.compatible_model, client, breaker()))
        elif name == "extractive":
            found.append(Provider(name, "extractive", None, breaker()))
        else:
            log.info("provider %s skipped: no key or base URL configured", name)
    return found


_routers: dict[str, NoteRouter] = {}


def note_router(settings: Settings) -> NoteRouter:
    """The router for `settings`; one per process, so circuit breakers remember failures."""
    key = settings_digest(settings)
    store = services(settings).notes
    with _lock:
        if key not in _routers:
            _routers[key] = NoteRouter(
                providers=_llm_providers(settings),
                store=store,
                prices=settings.llm_prices,
                token_budget=settings.llm_token_budget,
                group_tokens=settings.llm_group_tokens,
            )
        return _routers[key]
