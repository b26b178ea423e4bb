"""The review queue: what people are asked to check in Label Studio, and what comes back.

An item is a span of one job's transcript (a segment range, or all of it) queued for one
reason: someone flagged it, the decoder was unsure of it, or it was drawn for the audit of
confident output. Its id says what it is, so queuing the same thing twice is one item.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from audiary.domain.transcript import Segment


class ReviewReason(StrEnum):
    FLAGGED = "flagged"  # by a person, in the page or through the API
    UNCERTAIN = "uncertain"  # the quality signals marked the segments
    AUDIT = "audit"  # a random sample of confident jobs


class ReviewStatus(StrEnum):
    QUEUED = "queued"  # waiting for its Label Studio task
    SENT = "sent"  # the task exists
    CORRECTED = "corrected"  # an annotation came back and was applied
    SKIPPED = "skipped"  # the annotator skipped (cancelled) the task
    DROPPED = "dropped"  # the job or the task was deleted


class ReviewItem(BaseModel):
    """`review/{item_id}`."""

    item_id: str
    job_id: str
    owner: str | None = None
    reason: ReviewReason
    # The segment range (inclusive), or None for the whole transcript.
    first: int | None = None
    last: int | None = None
    start_s: float
    end_s: float
    model: str | None = None
    transcript_version: int = 1  # the version the reviewer was shown
    status: ReviewStatus = ReviewStatus.QUEUED
    task_id: int | None = None
    queued_at: datetime
    sent_at: datetime | None = None
    corrected_at: datetime | None = None
    # Once corrected: the machine's text of the span (v1) and the reviewer's, the machine's
    # word errors against it and its word count.
    machine_text: str | None = None
    corrected_text: str | None = None
    errors: int | None = None
    reference_words: int | None = None
    note: str | None = None  # why it was skipped or dropped

    def indices(self, segment_count: int) -> range:
        if self.first is None:
            return range(segment_count)
        return range(self.first, min(self.last if self.last is not None else self.first,
                                     segment_count - 1) + 1)


def item_id(job_id: str, reason: ReviewReason, first: int | None = None,
            last: int | None = None) -> str:
    """One id per (job, reason, range): the queue's idempotency key."""
    span = "all" if first is None else f"s{first}" if last in (None, first) else f"s{first}-{last}"
    return f"{job_id}.{reason.value}.{span}"


def uncertain_runs(segments: Sequence[Segment]) -> list[tuple[int, int]]:
    """Runs of adjacent uncertain segments, as (first, last) index pairs."""
    runs: list[tuple[int, int]] = []
    for index, segment in enumerate(segments):
        if not segment.uncertain:
            continue
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def in_audit(job_id: str, percent: float) -> bool:
    """Whether the job falls in the audit sample: `percent` of jobs, decided by a hash of the
    id, so the draw is the same every time it is made (and spread like a random one)."""
    if percent <= 0:
        return False
    draw = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big") % 10_000
    return draw < percent * 100


# --- Label Studio's side: the labeling config, predictions and annotations -------------------

# One audio player with a region per segment and a text area per region, pre-filled with the
# machine's text: the reviewer plays a region and fixes its words (never types a transcript).
LABEL_CONFIG = """<View>
  <Header value="$context"/>
  <Header value="Play each region and correct its text; skip the task if it is not speech."
          size="6"/>
  <Audio name="audio" value="$audio" hotkey="space"/>
  <Labels name="speech" toName="audio" choice="single">
    <Label value="Speech"/>
  </Labels>
  <TextArea name="transcription" toName="audio" perRegion="true" editable="true"
            required="true" displayMode="region-list" rows="2" maxSubmissions="1"
            placeholder="What is said in this region"/>
</View>
"""
FROM_REGION, FROM_TEXT, TO_AUDIO = "speech", "transcription", "audio"


def region_id(index: int) -> str:
    return f"s{index}"


def prediction(segments: Mapping[int, Segment], offset_s: float) -> list[dict[str, Any]]:
    """A Label Studio prediction result: a region and its text for each segment, with times
    relative to the clip that starts at `offset_s`."""
    result: list[dict[str, Any]] = []
    for index, segment in sorted(segments.items()):
        times = {"start": round(max(segment.start - offset_s, 0.0), 3),
                 "end": round(max(segment.end - offset_s, 0.0), 3), "channel": 0}
        common = {"id": region_id(index), "to_name": TO_AUDIO}
        result.append({**common, "from_name": FROM_REGION, "type": "labels",
                       "value": {**times, "labels": ["Speech"]}})
        result.append({**common, "from_name": FROM_TEXT, "type": "textarea",
                       "value": {**times, "text": [segment.text.strip()]}})
    return result


class AnnotationError(ValueError):
    """The annotation cannot become a correction; says why."""


def corrections_from(result: Iterable[Mapping[str, Any]], segments: Mapping[int, Segment],
                     offset_s: float) -> dict[int, str]:
    """Segment index -> corrected text, from an annotation's result. A region keeps the id of
    the predicted one it was made from; one drawn anew goes to the segment it overlaps most.
    A region left empty is an error (delete the region, or skip the task, instead)."""
    edits: dict[int, str] = {}
    by_id = {region_id(i): i for i in segments}
    for entry in result:
        if entry.get("from_name") != FROM_TEXT or entry.get("type") != "textarea":
            continue
        value = entry.get("value") or {}
        text = " ".join(str(t).strip() for t in value.get("text") or []).strip()
        index = by_id.get(str(entry.get("id")))
        if index is None:
            index = _overlapping(segments, float(value.get("start", 0)) + offset_s,
                                 float(value.get("end", 0)) + offset_s)
        if index is None:
            continue  # a region over no segment: nothing to correct there
        if not text:
            raise AnnotationError(f"the text of region {entry.get('id')} (segment {index}) is "
                                  "empty; delete the region or skip the task instead")
        edits[index] = f"{edits[index]} {text}" if index in edits else text
    return edits


def _overlapping(segments: Mapping[int, Segment], start: float, end: float) -> int | None:
    best, most = None, 0.0
    for index, segment in segments.items():
        overlap = min(end, segment.end) - max(start, segment.start)
        if overlap > most:
            best, most = index, overlap
    return best


# --- word errors -------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: what the review's word errors compare (the
    items keep both texts, for an evaluation with Whisper's normalisation)."""
    return re.findall(r"[\w']+", text.lower())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, words in `reference`): WER is their ratio."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1], len(ref)


class ReviewStats(BaseModel):
    """What `audiary review stats` prints: the queue, and measured WER per model."""

    queued: int = 0
    sent: int = 0
    corrected: int = 0
    skipped: int = 0
    dropped: int = 0
    wer_by_model: dict[str, float] = Field(default_factory=dict)
    words_by_model: dict[str, int] = Field(default_factory=dict)
