"""The diary note (DESIGN.md section 4): a versioned, validated schema, and its stored record."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NOTE_SCHEMA_VERSION = "1"


class _Strict(BaseModel):
    # Unknown keys are an error: a model that invents fields has not followed the schema.
    model_config = ConfigDict(extra="forbid")


def _iso_date(value: str | None) -> str | None:
    if value is not None:
        try:
            date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from exc
    return value


class TimeRange(_Strict):
    """Where in the transcript (seconds from the start of the audio) a statement came from."""

    start: float = Field(ge=0)
    end: float = Field(ge=0)


class Statement(_Strict):
    text: str = Field(min_length=1)
    source: TimeRange | None = Field(description="Transcript time range, if known.")


class ActionItem(_Strict):
    text: str = Field(min_length=1, description="What to do, as an imperative.")
    due: str | None = Field(description="ISO date YYYY-MM-DD if a due date was said, else null.")
    source: TimeRange | None

    _due_is_iso = field_validator("due")(_iso_date)


class DiaryNote(_Strict):
    """What one recording says, as a diary entry."""

    schema_version: Literal["1"] = Field(description='Always "1".')
    title: str = Field(min_length=1, max_length=120)
    date: str | None = Field(
        description="ISO date YYYY-MM-DD of the day described: said in the audio, else the "
        "recording date from the metadata, else null."
    )
    summary: str = Field(min_length=1, description="Three to six sentences.")
    mood: str | None = Field(description="One or two words, e.g. 'calm', 'stressed'.")
    highlights: list[Statement]
    people: list[str]
    places: list[str]
    action_items: list[ActionItem]
    tags: list[str]

    _date_is_iso = field_validator("date")(_iso_date)


class NoteRecord(BaseModel):
    """What `notes/{job_id}` holds: the note and how it was made."""

    job_id: str
    note: DiaryNote
    extractive: bool = Field(description="True when written offline by the extractive fallback.")
    provider: str
    model: str
    prompt_version: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_key: str
    cached: bool = False
    calls: int = Field(default=0, description="Provider calls made for this note (0 on a hit).")
    created_at: datetime | None = None
    # 1 for the first note; each re-summarize after a correction adds one and keeps the
    # earlier versions in `history` (oldest first), so no note is ever lost.
    version: int = 1
    transcript_version: int = 1
    history: list[NoteRecord] = Field(default_factory=list)


Kind = Literal["note", "partial", "merge"]


FeedbackSource = Literal["api", "ui", "label-studio"]


class SegmentCorrection(BaseModel):
    """One corrected segment, with the time range it covers (training clips are cut by it)."""

    index: int
    start: float
    end: float
    before: str
    after: str


class Feedback(BaseModel):
    """`feedback/{feedback_id}`: a correction and/or a flag on a job's transcript."""

    feedback_id: str
    job_id: str
    owner: str | None = None
    corrected_transcript: str | None = None
    flagged: bool = False
    comment: str | None = None
    source: FeedbackSource = "api"
    created_at: datetime
    # Per-segment corrections, and the transcript version they made (None: no new version).
    corrections: list[SegmentCorrection] = Field(default_factory=list)
    transcript_version: int | None = None
    flagged_segments: list[int] = Field(default_factory=list)  # indices flagged for review
