"""Transcripts: segments, assembly from chunk results, and renderings (txt, json, srt, vtt)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Literal, NamedTuple

import srt  # type: ignore[import-untyped]  # the library ships no type hints
from pydantic import BaseModel, Field, computed_field

TranscriptFormat = Literal["txt", "json", "srt", "vtt"]

# Whisper's own rules for a decode that went wrong (openai/whisper transcribe.py): text that
# compresses too well repeats itself, a low mean log-probability is a guess, and a high
# no-speech probability says there may be nothing to hear at all.
LOGPROB_FLOOR = -1.0
NO_SPEECH_CEILING = 0.6
COMPRESSION_CEILING = 2.4
# The same run of 1 to 4 words this many times in a row is a loop, not speech.
REPEATS = 4


def repeats_itself(text: str) -> bool:
    """Whether `text` holds one run of 1-4 words said `REPEATS` or more times in a row."""
    words = [w.strip(".,!?;:").lower() for w in text.split()]
    for size in range(1, 5):
        for start in range(len(words) - size * REPEATS + 1):
            run = words[start:start + size]
            if all(words[start + k * size:start + (k + 1) * size] == run
                   for k in range(1, REPEATS)):
                return True
    return False


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
    compression_ratio: float | None = None
    repetition: bool = False  # the text loops (repeats_itself), as the transcriber saw it
    words: list[Word] | None = None
    # What the decoder produced, for the OpenAI-compatible endpoint; never stored with a job.
    tokens: list[int] | None = Field(default=None, exclude=True)  # text token ids
    token_logprobs: list[float] | None = Field(default=None, exclude=True)  # one per token
    temperature: float | None = Field(default=None, exclude=True)  # the decode's temperature

    @computed_field  # type: ignore[prop-decorator]
    @property
    def uncertain(self) -> bool:
        """The decoder was unsure of this segment (see the thresholds above): shown marked,
        counted on the job, and never the only ground for an action item, person or date."""
        return bool(
            self.repetition
            or (self.avg_logprob is not None and self.avg_logprob < LOGPROB_FLOOR)
            or (self.no_speech_prob is not None and self.no_speech_prob > NO_SPEECH_CEILING)
            or (self.compression_ratio is not None
                and self.compression_ratio > COMPRESSION_CEILING))

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


class _Cue(NamedTuple):
    start_ms: int
    end_ms: int
    text: str


def _cues(transcript: Transcript) -> list[_Cue]:
    """The subtitle cues of a transcript, the same for SRT and VTT.

    A segment with no text gives no cue. The text goes on one line with its whitespace
    collapsed: an empty line would end the cue in both formats, and SRT has no escaping, so a
    line of speech that looked like a cue number or a timing line could start a new cue.
    Times are whole milliseconds, as both formats write them; a segment that would end at or
    before its start (zero length after rounding) is given 1 ms rather than dropped, so no words
    go missing and no player or parser rejects the cue. Cues are ordered by start time, as
    WebVTT requires; segments in order keep their order.
    """
    cues = []
    for segment in transcript.segments:
        text = " ".join(segment.text.split())
        if not text:
            continue
        start_ms = max(0, round(segment.start * 1000))
        end_ms = max(start_ms + 1, round(segment.end * 1000))
        cues.append(_Cue(start_ms, end_ms, text))
    return sorted(cues, key=lambda cue: (cue.start_ms, cue.end_ms))


def _vtt_timestamp(millis: int) -> str:
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def to_srt(transcript: Transcript) -> str:
    """The transcript as SubRip subtitles, written by the `srt` library."""
    composed: str = srt.compose(
        [
            srt.Subtitle(
                index=index,
                start=timedelta(milliseconds=cue.start_ms),
                end=timedelta(milliseconds=cue.end_ms),
                content=cue.text,
            )
            for index, cue in enumerate(_cues(transcript), start=1)
        ],
        reindex=False,
    )
    return composed


def to_vtt(transcript: Transcript) -> str:
    """The transcript as WebVTT (https://www.w3.org/TR/webvtt1/).

    Cue text is escaped (`&`, `<`, `>`), so it is read as plain text, never as markup, and
    `-->` cannot appear in a cue payload.
    """
    blocks = [
        f"{_vtt_timestamp(cue.start_ms)} --> {_vtt_timestamp(cue.end_ms)}\n"
        f"{html.escape(cue.text, quote=False)}\n"
        for cue in _cues(transcript)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


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
