"""The LLM router: which provider writes a job's diary note, and what it cost.

Providers are tried in the configured order. For each: a cache hit (same transcript, prompt
version, provider and model) costs nothing; an open circuit breaker skips it; the SDK retries
transport errors (with backoff, jitter and Retry-After); an answer that fails validation gets
one repair attempt; what still fails counts against the breaker and the next provider is
tried. Transcripts above the token budget are never truncated: they are summarised in groups
of segments (partial notes keep their time ranges) and the partial notes merged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from audiary import metrics
from audiary.domain.notes import DiaryNote, NoteRecord
from audiary.domain.transcript import Segment, Transcript
from audiary.errors import AudiaryError, ProviderError
from audiary.notes import prompts
from audiary.notes.breaker import CircuitBreaker
from audiary.notes.extractive import EXTRACTIVE_VERSION, write_extractive
from audiary.observability import tracer
from audiary.ports import LlmClient, NoteStore

log = logging.getLogger(__name__)

EXTRACTIVE = "extractive"


class InvalidOutputError(AudiaryError):
    """A provider's answer did not validate, even after the repair attempt."""


class AllProvidersFailedError(AudiaryError):
    """No provider could write the note; `reasons` has one line per provider."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("every provider failed: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass
class Provider:
    """One entry of the provider order: an LLM client, or None for the extractive writer."""

    name: str
    model: str
    client: LlmClient | None
    breaker: CircuitBreaker


@dataclass
class _Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0

    def add(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.calls += 1


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


def segment_groups(segments: Sequence[Segment], max_tokens: int) -> list[list[Segment]]:
    """Consecutive segments in groups of at most `max_tokens` (a longer segment stands alone)."""
    groups: list[list[Segment]] = [[]]
    size = 0
    for seg in segments:
        cost = prompts.estimate_tokens(prompts.transcript_lines([seg])) + 1
        if groups[-1] and size + cost > max_tokens:
            groups.append([])
            size = 0
        groups[-1].append(seg)
        size += cost
    return [g for g in groups if g]


@dataclass
class NoteRouter:
    providers: list[Provider]
    store: NoteStore
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    token_budget: int = 12_000
    group_tokens: int = 6_000

    def __post_init__(self) -> None:
        # Read at scrape time, so an open breaker shows as half-open once its cool-down ends.
        for provider in self.providers:
            if provider.client is not None:
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
            version = EXTRACTIVE_VERSION if provider.client is None else prompts.PROMPT_VERSION
            key = cache_key(transcript, version, provider.name, provider.model, recorded_at)
            cached = self.store.get_cached(key)
            if cached is not None:
                log.info("cache hit with %s", provider.name, extra={"job_id": job_id})
                return cached.model_copy(update={"job_id": job_id, "cached": True, "calls": 0})
            if provider.client is None:
                note = write_extractive(transcript, recorded_at=recorded_at)
                return NoteRecord(
                    job_id=job_id, note=note, extractive=True, provider=EXTRACTIVE,
                    model=EXTRACTIVE_VERSION, prompt_version=EXTRACTIVE_VERSION, cache_key=key,
                )
            if not provider.breaker.allow():
                reasons.append(f"{provider.name}: circuit open after repeated failures")
                continue
            usage = _Usage()
            with tracer().start_as_current_span(
                f"llm {provider.name}", kind=SpanKind.CLIENT,
                attributes={"audiary.provider": provider.name, "audiary.model": provider.model},
            ) as span:
                try:
                    note = self._llm_note(provider.client, transcript, recorded_at, usage)
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
                model=provider.model, prompt_version=prompts.PROMPT_VERSION,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cost_usd=self.cost(provider.model, usage.input_tokens, usage.output_tokens),
                cache_key=key, calls=usage.calls,
            )
            metrics.LLM_COST_USD.labels(provider.name, provider.model).inc(record.cost_usd)
            self.store.put_cached(record)
            return record
        raise AllProvidersFailedError(reasons or ["no provider is configured"])

    def _llm_note(
        self, client: LlmClient, transcript: Transcript, recorded_at: datetime | None,
        usage: _Usage,
    ) -> DiaryNote:
        whole = prompts.note_prompt(transcript.segments, recorded_at)
        if prompts.estimate_tokens(whole) <= self.token_budget:
            return self._ask(client, whole, usage)
        groups = segment_groups(transcript.segments, self.group_tokens)
        log.info("transcript above the token budget: map-reduce over %d groups", len(groups))
        partials = [
            self._ask(client, prompts.partial_prompt(g, recorded_at, i, len(groups)), usage)
            for i, g in enumerate(groups, start=1)
        ]
        return self._ask(client, prompts.merge_prompt(partials, recorded_at), usage)

    def _ask(self, client: LlmClient, user: str, usage: _Usage) -> DiaryNote:
        schema = prompts.note_schema()
        answer = client.complete_json(
            system=prompts.SYSTEM, user=user, schema_name=prompts.SCHEMA_NAME, schema=schema
        )
        usage.add(answer.input_tokens, answer.output_tokens)
        try:
            return DiaryNote.model_validate_json(answer.text)
        except ValidationError as first:
            problem = _describe(first)
        log.info("%s answer failed validation (%s); asking once to repair", client.provider,
                 problem)
        repaired = client.complete_json(
            system=prompts.SYSTEM, user=prompts.repair_prompt(user, answer.text, problem),
            schema_name=prompts.SCHEMA_NAME, schema=schema,
        )
        usage.add(repaired.input_tokens, repaired.output_tokens)
        try:
            return DiaryNote.model_validate_json(repaired.text)
        except ValidationError as second:
            raise InvalidOutputError(
                f"{client.provider}: answer invalid after one repair: {_describe(second)}"
            ) from second


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


def _count_tokens(provider: Provider, usage: _Usage) -> None:
    # Tokens of failed attempts (e.g. an answer that failed validation) are paid for too.
    for direction, tokens in (("input", usage.input_tokens), ("output", usage.output_tokens)):
        if tokens:
            metrics.LLM_TOKENS.labels(provider.name, provider.model, direction).inc(tokens)


def _describe(error: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
        for e in error.errors()[:5]
    ]
    return "; ".join(parts)
