"""SRT and VTT as independent parsers read them: `srt.parse` and webvtt-py, in strict mode.

Every non-empty segment must come back as one cue with its times (to the millisecond) and its
text (whitespace collapsed); empty segments give no cue, and nothing in the text (markup,
entities, `-->`, blank lines, a line that looks like a cue) may change the cues.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple

import srt
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st

from audiary.domain.transcript import Segment, Transcript, render, to_srt, to_vtt
from audiary.evaluation.longform import load_manifest
from tests.speech import require_speech

VTT_TIMING = re.compile(r"\d{2,}:\d{2}:\d{2}\.\d{3} --> \d{2,}:\d{2}:\d{2}\.\d{3}")
SRT_TIMING = re.compile(r"\d{2,}:\d{2}:\d{2},\d{3} --> \d{2,}:\d{2}:\d{2},\d{3}")


class Cue(NamedTuple):
    start_ms: int
    end_ms: int
    text: str


def expected_cues(segments: Sequence[Segment]) -> list[Cue]:
    """What the formats must carry: one cue per segment with text, times in whole ms, a cue
    never ending at or before its start (a zero-length segment lasts 1 ms), ordered by start
    time as WebVTT requires (segments in order keep their order)."""
    cues = []
    for segment in segments:
        text = " ".join(segment.text.split())
        if text:
            start = max(0, round(segment.start * 1000))
            end = round(segment.end * 1000)
            cues.append(Cue(start, end if end > start else start + 1, text))
    return sorted(cues, key=lambda cue: (cue.start_ms, cue.end_ms))


def read_srt(body: str) -> list[Cue]:
    """The cues of an SRT file, as the `srt` library parses it (unparseable data raises)."""
    subtitles = list(srt.parse(body))
    assert [s.index for s in subtitles] == list(range(1, len(subtitles) + 1))
    # Blocks of number, timing line and one line of text (SRT has no escaping, so `-->` may
    # appear in the text, and the parser must still find the same cues).
    blocks = [block.split("\n") for block in body.split("\n\n") if block]
    assert [len(block) for block in blocks] == [3] * len(subtitles)
    for block in blocks:
        assert SRT_TIMING.fullmatch(block[1]), f"bad SRT timing line {block[1]!r}"
    return [
        Cue(s.start // timedelta(milliseconds=1), s.end // timedelta(milliseconds=1), s.content)
        for s in subtitles
    ]


def read_vtt(body: str) -> list[Cue]:
    """The cues of a WebVTT file, as webvtt-py parses it strictly, entities decoded."""
    assert body.split("\n", 1)[0] == "WEBVTT"
    captions = webvtt.from_buffer(io.StringIO(body), strict=True).captions
    cues = []
    for caption in captions:
        # Escaped text holds no `<`, so webvtt-py's tag stripping leaves it whole; it does not
        # decode entities, which is the reader's part (html.unescape covers WebVTT's).
        assert caption.raw_text == caption.text
        assert caption.identifier is None
        cues.append(Cue(caption.start_time.in_milliseconds(),
                        caption.end_time.in_milliseconds(), html.unescape(caption.text)))
    # One timing line per cue, as the spec writes it: no `-->` anywhere else.
    timings = [line for line in body.split("\n") if "-->" in line]
    assert len(timings) == len(cues)
    for line in timings:
        assert VTT_TIMING.fullmatch(line), f"bad VTT timing line {line!r}"
    return cues


def assert_round_trip(transcript: Transcript) -> None:
    """Both formats, as render writes them, give back exactly the non-empty segments."""
    expected = expected_cues(transcript.segments)
    cues = read_srt(render(transcript, "srt"))
    assert cues == expected
    assert read_vtt(render(transcript, "vtt")) == expected
    assert all(cue.end_ms > cue.start_ms for cue in cues)
    starts = [cue.start_ms for cue in cues]
    assert starts == sorted(starts)


HOSTILE = [
    " Tom & Jerry <b>bold</b> &amp; a --> b > c ",
    "",
    "   \n\t ",
    "first line\n\n\nsecond line\n\n",
    "  Ünïcödé — 日本語 🎙️ naïve café\u00a0end ",
    "-->",
    "<v Roger>hi</v> <c.yellow>there</c> <00:00:01.000>",
    "1\n00:00:01,000 --> 00:00:02,000\nlooks like an SRT cue",
    "00:00:01.000 --> 00:00:02.000",
    "NOTE not a comment\n\nWEBVTT",
    "&lt;already escaped&gt; &#60; &nbsp; &",
    "\r\nwindows\r\n\r\nline ends\r",
]


def _hostile_transcript() -> Transcript:
    segments = [
        Segment(start=2.0 * i, end=2.0 * i + 1.5, text=text) for i, text in enumerate(HOSTILE)
    ]
    segments.append(Segment(start=30.0, end=30.0, text="zero length"))
    segments.append(Segment(start=31.0004, end=31.0001, text="ends before it starts"))
    return Transcript(job_id="j", segments=segments)


def test_hostile_text_round_trips():
    transcript = _hostile_transcript()
    assert_round_trip(transcript)
    with_text = [s for s in transcript.segments if s.text.strip()]
    assert len(with_text) == len(transcript.segments) - 2
    assert len(read_srt(to_srt(transcript))) == len(read_vtt(to_vtt(transcript))) == len(with_text)


def test_vtt_escapes_cue_text_and_skips_empty_segments():
    transcript = Transcript(job_id="j", segments=[
        Segment(start=0.0, end=1.0, text=" a & <b> --> c "),
        Segment(start=1.0, end=2.0, text="  "),
        Segment(start=2.0, end=3.0, text="one\n\ntwo"),
    ])
    assert to_vtt(transcript) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.000\na &amp; &lt;b&gt; --&gt; c\n\n"
        "00:00:02.000 --> 00:00:03.000\none two\n"
    )
    assert to_srt(transcript) == (
        "1\n00:00:00,000 --> 00:00:01,000\na & <b> --> c\n\n"
        "2\n00:00:02,000 --> 00:00:03,000\none two\n\n"
    )


def test_zero_length_segment_lasts_one_millisecond():
    transcript = Transcript(job_id="j", segments=[Segment(start=5.0, end=5.0, text="hm")])
    assert read_srt(to_srt(transcript)) == [Cue(5000, 5001, "hm")]
    assert read_vtt(to_vtt(transcript)) == [Cue(5000, 5001, "hm")]


def test_no_segments_with_text_give_no_cues():
    transcript = Transcript(job_id="j", segments=[Segment(start=0.0, end=1.0, text=" \n ")])
    assert to_srt(transcript) == ""
    assert to_vtt(transcript) == "WEBVTT\n"
    assert read_vtt(to_vtt(transcript)) == []
    assert read_srt(to_srt(transcript)) == []


def test_cues_are_ordered_by_start_time():
    transcript = Transcript(job_id="j", segments=[
        Segment(start=4.0, end=5.0, text="later"),
        Segment(start=1.0, end=2.0, text="earlier"),
    ])
    assert [c.text for c in read_srt(to_srt(transcript))] == ["earlier", "later"]
    assert [c.text for c in read_vtt(to_vtt(transcript))] == ["earlier", "later"]


def test_long_transcripts_keep_hours():
    transcript = Transcript(job_id="j", segments=[
        Segment(start=3661.2345, end=3663.0, text="an hour later"),
        Segment(start=360_000.5, end=360_001.25, text="a hundred hours later"),
    ])
    assert_round_trip(transcript)
    assert "100:00:00.500 --> 100:00:01.250" in to_vtt(transcript)


def test_real_speech_transcript_round_trips():
    """The reference texts of the real recordings (cased, punctuated, digits, fillers), laid
    end to end with their real durations and pauses between them, as a transcript would be."""
    require_speech()
    segments, position = [], 0.0
    for i, utterance in enumerate(load_manifest()):
        position += 0.25 + (i % 4) * 0.6
        segments.append(Segment(start=position, end=position + utterance.duration_s,
                                text=" " + utterance.text))
        position += utterance.duration_s
    assert len(segments) > 20
    transcript = Transcript(job_id="real-speech", language="en", segments=segments)
    assert_round_trip(transcript)
    assert len(read_vtt(to_vtt(transcript))) == len(segments)


# Text from every Unicode category (surrogates aside), weighted towards what parsers trip on.
_TRICKY = st.sampled_from(
    ["&", "<", ">", "-->", "--", "<b>", "</b>", "&amp;", "&lt;", "&#", ";", "\n", "\n\n",
     "\r", "\r\n", " ", "\t", "\u2028", "\ufeff", "\x00", "NOTE", "WEBVTT", "1", ":", ",",
     "00:00:01,000 --> 00:00:02,000", "00:00:01.000 --> 00:00:02.000", "é", "日本", "🎙️"]
)
_TEXT = st.lists(st.one_of(_TRICKY, st.text(max_size=8)), max_size=12).map("".join)


@st.composite
def _transcripts(draw: st.DrawFn) -> Transcript:
    """Segments in time order, as a transcription gives them; some empty, some zero-length."""
    segments, position = [], 0.0
    for text in draw(st.lists(_TEXT, max_size=15)):
        position += draw(st.floats(min_value=0.0, max_value=7200.0))
        duration = draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.002),
                                  st.floats(min_value=0.0, max_value=60.0)))
        segments.append(Segment(start=position, end=position + duration, text=text))
        position += duration
    return Transcript(job_id="j", segments=segments)


@settings(max_examples=300, deadline=None)
@given(_transcripts())
def test_any_text_round_trips(transcript: Transcript):
    assert_round_trip(transcript)

