"""Training data from corrections: clips of at most 30 s with the text people gave them,
filtered, split by recording, counted in hours.

A corrected segment (from the page or Label Studio) is a clip candidate: its time range in the
canonical audio, the latest corrected text, and the machine's text of version 1. The filters
turn away what would teach the model nothing or the wrong thing; the split is decided by a
hash of the source (the recording), so no recording lands in two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from audiary.domain.audio import frame_db


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Rejection(StrEnum):
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    EMPTY = "empty"
    UNCHANGED = "unchanged"
    SPEECH_RATE = "speech_rate"  # characters per second outside the bounds
    NOISY = "noisy"  # SNR estimate below the bound
    AUDIO_GONE = "audio_gone"


class Filters(BaseModel):
    """The quality filters a dataset was built with (recorded with it)."""

    min_s: float = 1.0
    max_s: float = 30.0
    min_chars_per_s: float = 2.0
    max_chars_per_s: float = 30.0
    min_snr_db: float = 10.0
    ratios: tuple[float, float, float] = (0.92, 0.04, 0.04)


class Candidate(BaseModel):
    job_id: str
    index: int
    start_s: float
    end_s: float
    text: str
    machine_text: str
    source_id: str
    model: str | None = None
    language: str | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class ManifestRow(BaseModel):
    """One line of a split's JSONL manifest."""

    audio: str  # gs://bucket/key (or s3://) of the clip
    text: str
    duration_s: float
    language: str | None
    job_id: str
    segment: int
    source_id: str
    model: str | None
    wer: float  # of the machine's text against `text`
    snr_db: float
    split: Split
    machine_text: str = ""  # what the model heard (the vocabulary candidate learns from it)


class DatasetRecord(BaseModel):
    """`datasets/{version}`: where a dataset's manifests are and what is in them."""

    version: int
    created_at: datetime
    bucket: str
    manifests: dict[Split, str]
    rows: dict[Split, int]
    hours: dict[Split, float]
    rejected: dict[Rejection, int] = Field(default_factory=dict)
    filters: Filters
    ready: bool  # train hours passed the threshold
    ready_hours: float
    # A digest of the corrections it was built from (job and transcript version each), so a
    # build on the same corrections is known to change nothing.
    corrections: str = ""


def corrections_digest(versions: Iterable[tuple[str, int]]) -> str:
    """The digest of (job id, transcript version) pairs, in any order."""
    text = "\n".join(f"{job}@{version}" for job, version in sorted(versions))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rejection(candidate: Candidate, snr_db: float | None, filters: Filters) -> Rejection | None:
    """Why the candidate cannot be a training clip, or None if it can. `snr_db` is None when
    the audio could not be read."""
    text = candidate.text.strip()
    if snr_db is None:
        return Rejection.AUDIO_GONE
    if not text:
        return Rejection.EMPTY
    if " ".join(text.lower().split()) == " ".join(candidate.machine_text.strip().lower().split()):
        return Rejection.UNCHANGED
    if candidate.duration_s < filters.min_s:
        return Rejection.TOO_SHORT
    if candidate.duration_s > filters.max_s:
        return Rejection.TOO_LONG
    rate = len(text) / candidate.duration_s
    if not filters.min_chars_per_s <= rate <= filters.max_chars_per_s:
        return Rejection.SPEECH_RATE
    if snr_db < filters.min_snr_db:
        return Rejection.NOISY
    return None


def split_of(source_id: str, ratios: tuple[float, float, float]) -> Split:
    """The split a source belongs to: a hash of its id against the cumulative ratios."""
    draw = int.from_bytes(hashlib.sha256(source_id.encode()).digest()[:8], "big") / 2**64
    train, val, _ = ratios
    total = sum(ratios)
    if draw < train / total:
        return Split.TRAIN
    if draw < (train + val) / total:
        return Split.VAL
    return Split.TEST


FRAME = 320  # 20 ms at 16 kHz


def snr_db(samples: NDArray[np.float32]) -> float:
    """A signal-to-noise estimate: the loud frames' level (95th percentile) over the quiet
    frames' (10th percentile), in dB. Silence or a steady hum gives about 0."""
    levels = frame_db(samples, FRAME)
    if len(levels) < 2:
        return 0.0
    return float(np.percentile(levels, 95) - np.percentile(levels, 10))


class WerSummary(BaseModel):
    """Corpus WER of one slice: total errors over total reference words."""

    wer: float
    errors: int
    words: int
    clips: int


class EvaluationRecord(BaseModel):
    """`evaluations/{id}`: one model's WER on one dataset version, per split and per source
    (the project's normaliser on both sides: evaluation.wer)."""

    evaluation_id: str
    model: str
    dataset_version: int
    created_at: datetime
    splits: dict[Split, WerSummary]
    sources: dict[str, WerSummary] = Field(default_factory=dict)
    missing_clips: int = 0  # manifest rows whose audio is gone: counted, not scored
