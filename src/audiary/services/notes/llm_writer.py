"""A diary-note writer on any `LlmClient`: prompt, validate, repair once, map-reduce.

The SDK inside the client retries transport errors (with backoff, jitter and Retry-After).
An answer that fails schema validation gets one repair attempt, then `InvalidOutputError`.
Transcripts above the token budget are never truncated: they are summarised in groups of
segments (partial notes keep their time ranges) and the partial notes merged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from pydantic import ValidationError

from audiary.domain.notes import DiaryNote
from audiary.domain.transcript import Segment, Transcript
from audiary.errors import InvalidOutputError
from audiary.ports import LlmClient, NoteWriter, Usage
from audiary.services.notes import prompts

__all__ = ["LlmNoteWriter", "segment_groups"]

log = logging.getLogger(__name__)


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


class LlmNoteWriter(NoteWriter):
    """`NoteWriter` on a chat model; `provider` names it in the provider order."""

    def __init__(
        self, client: LlmClient, *, provider: str | None = None, token_budget: int = 12_000,
        group_tokens: int = 6_000,
    ) -> None:
        self.client = client
        self.provider = provider or client.provider
        self.model = client.model
        self.version = prompts.PROMPT_VERSION
        self.token_budget = token_budget
        self.group_tokens = group_tokens

    def write(
        self, transcript: Transcript, *, recorded_at: datetime | None, usage: Usage
    ) -> DiaryNote:
        whole = prompts.note_prompt(transcript.segments, recorded_at)
        if prompts.estimate_tokens(whole) <= self.token_budget:
            return self._ask(whole, usage)
        groups = segment_groups(transcript.segments, self.group_tokens)
        log.info("transcript above the token budget: map-reduce over %d groups", len(groups))
        partials = [
            self._ask(prompts.partial_prompt(g, recorded_at, i, len(groups)), usage)
            for i, g in enumerate(groups, start=1)
        ]
        return self._ask(prompts.merge_prompt(partials, recorded_at), usage)

    def _ask(self, user: str, usage: Usage) -> DiaryNote:
        schema = prompts.note_schema()
        answer = self.client.complete_json(
            system=prompts.SYSTEM, user=user, schema_name=prompts.SCHEMA_NAME, schema=schema
        )
        usage.add(answer.input_tokens, answer.output_tokens)
        try:
            return DiaryNote.model_validate_json(answer.text)
        except ValidationError as first:
            problem = _describe(first)
        log.info("%s answer failed validation (%s); asking once to repair", self.client.provider,
                 problem)
        repaired = self.client.complete_json(
            system=prompts.SYSTEM, user=prompts.repair_prompt(user, answer.text, problem),
            schema_name=prompts.SCHEMA_NAME, schema=schema,
        )
        usage.add(repaired.input_tokens, repaired.output_tokens)
        try:
            return DiaryNote.model_validate_json(repaired.text)
        except ValidationError as second:
            raise InvalidOutputError(
                f"{self.client.provider}: answer invalid after one repair: {_describe(second)}"
            ) from second


def _describe(error: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
        for e in error.errors()[:5]
    ]
    return "; ".join(parts)
