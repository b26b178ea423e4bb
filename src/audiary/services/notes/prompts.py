"""Prompts for the diary note. Changing any text here changes `PROMPT_VERSION`, so cached
notes made with older prompts are not reused."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from audiary.domain.notes import DiaryNote
from audiary.domain.transcript import Segment

PROMPT_VERSION = "diary-2"
SCHEMA_NAME = "diary_note"

SYSTEM = """You turn the transcript of a personal voice recording into a diary note.
Write in the speaker's voice ("I"), in the transcript's language. Use only what is said: never
invent people, places, dates or tasks. Each transcript line starts with [start-end] in seconds;
for highlights and action items, give the time range they come from as `source`.
A line marked (uncertain) was heard poorly and may be garbled: never take an action item,
person, place or date from such a line alone.
Dates are ISO (YYYY-MM-DD): resolve "today", "tomorrow", "by Friday" against the note's date.
Answer with one JSON object that follows the schema exactly."""


def note_schema() -> dict[str, Any]:
    return DiaryNote.model_json_schema()


def estimate_tokens(text: str) -> int:
    """A provider-neutral estimate (about 4 characters per token for English)."""
    return math.ceil(len(text) / 4)


def transcript_lines(segments: Sequence[Segment]) -> str:
    return "\n".join(
        f"[{s.start:.1f}-{s.end:.1f}] {'(uncertain) ' if s.uncertain else ''}{s.text.strip()}"
        for s in segments)


def _context(recorded_at: datetime | None) -> str:
    when = recorded_at.date().isoformat() if recorded_at else "unknown"
    return f"Recording date (from the upload): {when}."


def note_prompt(segments: Sequence[Segment], recorded_at: datetime | None) -> str:
    return f"{_context(recorded_at)}\n\nTranscript:\n{transcript_lines(segments)}"


def partial_prompt(
    segments: Sequence[Segment], recorded_at: datetime | None, part: int, parts: int
) -> str:
    return (
        f"{_context(recorded_at)}\nThis is part {part} of {parts} of a long recording. "
        "Write a note for this part only; keep every fact with its time range.\n\n"
        f"Transcript part {part}:\n{transcript_lines(segments)}"
    )


def merge_prompt(partials: Sequence[DiaryNote], recorded_at: datetime | None) -> str:
    notes = json.dumps([p.model_dump(mode="json") for p in partials], ensure_ascii=False)
    return (
        f"{_context(recorded_at)}\nThese are notes on consecutive parts of one recording, in "
        "order. Merge them into one note for the whole recording: one title and summary for "
        "all of it; keep every person, place and action item and every highlight that "
        "matters from the beginning, middle and end, with their time ranges.\n\n"
        f"Part notes:\n{notes}"
    )


def repair_prompt(original: str, answer: str, problem: str) -> str:
    return (
        f"{original}\n\nYour previous answer was:\n{answer}\n\nIt is not valid: {problem}\n"
        "Answer again with one JSON object that follows the schema exactly."
    )
