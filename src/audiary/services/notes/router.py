"""The LLM router: which provider writes a job's diary note, and what it cost.

Providers (note writers, `NoteWriter`) are tried in the configured order. For each: a cache
hit (same transcript, prompt version, provider and model) costs nothing; an open circuit
breaker skips it; what fails (`ProviderError`, `InvalidOutputError`) counts against the
breaker and the next provider is tried. How an LLM writer retries, repairs and map-reduces
long transcripts is in `llm_writer.py`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry.trace import SpanKind, StatusCode

from audiary.domain.notes import NoteRecord
from audiary.domain.transcript import Transcript
from audiary.errors import AudiaryError, InvalidOutputError, ProviderError
from audiary.observability import metrics
from audiary.observability.telemetry import tracer
from audiary.ports import NoteStore, NoteWriter, Usage
from audiary.services.notes.breaker import CircuitBreaker

log = logging.getLogger(__name__)


class AllProvidersFailedError(AudiaryError):
    """No provider could write the note; `reasons` has one line per provider."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("every provider failed: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass
class Provider:
    """One entry of the provider order: a note writer and its circuit breaker."""

    writer: NoteWriter
    breaker: CircuitBreaker

    @property
    def name(self) -> str:
        return self.writer.provider

    @property
    def model(self) -> str:
        return self.writer.model


def cache_key(
    transcript: Transcript, prompt_version: str, provider: str, model: str,
    recorded_at: datetime | None = None,
) -> str:
    """Content address of a note: the same content is never paid for twice.

    The recording day is part of the content: it is in the prompt, and dates in the note
    ("tomorrow", "by Friday") are resolved against it.
    """
    day = recorded_at.date().isoformat() if recorded_at else ""
    h = hashlib.sha256()
    for part in (prompt_version, provider, model, day):
        h.update(part.encode() + b"\0")
    for seg in transcript.segments:
        h.update(f"{seg.start:.2f}|{seg.end:.2f}|{seg.text}\n".encode())
    return h.hexdigest()


@dataclass
class NoteRouter:
    providers: list[Provider]
    store: NoteStore
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read at scrape time, so an open breaker shows as half-open once its cool-down ends.
        for provider in self.providers:
            if not provider.writer.extractive:
                metrics.BREAKER_STATE.labels(provider.name).set_function(provider.breaker.level)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        price_in, price_out = self.prices.get(model, (0.0, 0.0))
        if model not in self.prices and (input_tokens or output_tokens):
            log.warning("no price for model %s; its cost is recorded as 0", model)
        return (input_tokens * price_in + output_tokens * price_out) / 1e6

    def write(
        self, job_id: str, transcript: Transcript, *, recorded_at: datetime | None = None
    ) -> NoteRecord:
        """The note for `transcript`; `AllProvidersFailedError` when no provider managed."""
        reasons: list[str] = []
        for provider in self.providers:
            writer = provider.writer
            key = cache_key(transcript, writer.version, writer.provider, writer.model, recorded_at)
            cached = self.store.get_cached(key)
            if cached is not None:
                log.info("cache hit with %s", provider.name, extra={"job_id": job_id})
                return cached.model_copy(update={"job_id": job_id, "cached": True, "calls": 0})
            if writer.extractive:
                note = writer.write(transcript, recorded_at=recorded_at, usage=Usage())
                return NoteRecord(
                    job_id=job_id, note=note, extractive=True, provider=writer.provider,
                    model=writer.model, prompt_version=writer.version, cache_key=key,
                )
            if not provider.breaker.allow():
                reasons.append(f"{provider.name}: circuit open after repeated failures")
                continue
            usage = Usage()
            with tracer().start_as_current_span(
                f"llm {provider.name}", kind=SpanKind.CLIENT,
                attributes={"audiary.provider": provider.name, "audiary.model": provider.model},
            ) as span:
                try:
                    note = writer.write(transcript, recorded_at=recorded_at, usage=usage)
                except (ProviderError, InvalidOutputError) as exc:
                    provider.breaker.record_failure()
                    metrics.LLM_FAILURES.labels(provider.name, failure_reason(exc)).inc()
                    span.set_status(StatusCode.ERROR, str(exc))
                    reasons.append(str(exc))
                    log.warning("%s failed: %s", provider.name, exc, extra={"job_id": job_id})
                    continue
                finally:
                    _count_tokens(provider, usage)
                    span.set_attributes({"audiary.input_tokens": usage.input_tokens,
                                         "audiary.output_tokens": usage.output_tokens})
            provider.breaker.record_success()
            record = NoteRecord(
                job_id=job_id, note=note, extractive=False, provider=provider.name,
                model=provider.model, prompt_version=writer.version,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cost_usd=self.cost(provider.model, usage.input_tokens, usage.output_tokens),
                cache_key=key, calls=usage.calls,
            )
            metrics.LLM_COST_USD.labels(provider.name, provider.model).inc(record.cost_usd)
            self.store.put_cached(record)
            return record
        raise AllProvidersFailedError(reasons or ["no provider is configured"])


def failure_reason(exc: ProviderError | InvalidOutputError) -> str:
    """A short, bounded label for why a provider attempt failed."""
    if isinstance(exc, InvalidOutputError):
        return "invalid_output"
    if exc.status == 429:
        return "rate_limited"
    if exc.status is not None and exc.status >= 500:
        return "server_error"
    if exc.status is not None and 200 <= exc.status < 300:
        return "malformed"
    if exc.status is not None:
        return "rejected"
    return "unavailable" if exc.retryable else "refused"


def _count_tokens(provider: Provider, usage: Usage) -> None:
    # Tokens of failed attempts (e.g. an answer that failed validation) are paid for too.
    for direction, tokens in (("input", usage.input_tokens), ("output", usage.output_tokens)):
        if tokens:
            metrics.LLM_TOKENS.labels(provider.name, provider.model, direction).inc(tokens)
