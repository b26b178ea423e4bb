"""Transcripts: segments, assembly from chunk results, and renderings (txt, json, srt, vtt)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

TranscriptFormat = Literal["txt", "json", "srt", "vtt"]


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = None


class Segment(BaseModel):
    """A piece of recognized speech; times are seconds from the start of the whole file."""

    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] | None = None

    def shifted(self, offset_s: float) -> Segment:
        words = (
            [w.model_copy(update={"start": w.start + offset_s, "end": w.end + offset_s})
             for w in self.words]
            if self.words
            else self.words
        )
        return self.model_copy(
            update={"start": self.start + offset_s, "end": self.end + offset_s, "words": words}
        )


class Transcript(BaseModel):
    job_id: str
    language: str | None = None
    model: str | None = None
    duration_s: float | None = None
    segments: list[Segment] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


def assemble(
    job_id: str,
    chunk_segments: Iterable[tuple[float, Sequence[Segment]]],
    *,
    language: str | None = None,
    model: str | None = None,
    duration_s: float | None = None,
) -> Transcript:
    """Join per-chunk segments (times relative to each chunk) into one transcript.

    `chunk_segments` holds (chunk start in seconds, segments); chunks may come in any order.
    """
    segments = [
        seg.shifted(start)
        for start, segs in sorted(chunk_segments, key=lambda item: item[0])
        for seg in segs
    ]
    return Transcript(
        job_id=job_id, language=language, model=model, duration_s=duration_s, segments=segments
    )


def _timestamp(seconds: float, sep: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in transcript.segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(transcript: Transcript, fmt: TranscriptFormat) -> str:
    """The transcript in one of the supported formats."""
    if fmt == "txt":
        return transcript.text + "\n"
    if fmt == "json":
        return json.dumps(transcript.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    if fmt == "srt":
        return to_srt(transcript)
    if fmt == "vtt":
        return to_vtt(transcript)
    raise ValueError(f"unknown transcript format {fmt!r}; use txt, json, srt or vtt")
