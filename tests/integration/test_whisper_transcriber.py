"""WhisperTranscriber on real speech: long-form quality close to utterances one by one.

A ~2-minute long-form file is built from the shared real-speech set (the setting
AUDIARY_SPEECH_DIR, default ../shared/speech; never copied). The model is the packaged tiny.en.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

from audiary.adapters.whisper.engine import WhisperTranscriber
from audiary.domain.audio import SAMPLE_RATE
from audiary.domain.transcript import Segment
from audiary.evaluation.longform import LongForm, build_longform
from audiary.evaluation.wer import WerResult, wer
from audiary.settings import Settings
from tests.speech import require_speech

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Run:
    longform: LongForm
    segments: list[Segment]
    windowed: WerResult
    sequential: WerResult
    one_by_one: WerResult


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    return WhisperTranscriber(
        Settings().resolved_model_path(), device="cpu", cpu_threads=os.cpu_count() or 0
    )


@pytest.fixture(scope="module")
def run(transcriber: WhisperTranscriber) -> Run:
    require_speech()
    longform = build_longform(120.0, seed=0)
    samples = longform.samples
    segments = transcriber.transcribe(samples, language="en")
    sequential = transcriber.transcribe_sequential(samples, language="en")
    one_by_one = [
        " ".join(
            s.text
            for s in transcriber.transcribe_sequential(
                samples[round(u.start_s * SAMPLE_RATE) : round(u.end_s * SAMPLE_RATE)],
                language="en",
            )
        )
        for u in longform.utterances
    ]
    return Run(
        longform=longform,
        segments=segments,
        windowed=wer([longform.reference], [" ".join(s.text for s in segments)]),
        sequential=wer([longform.reference], [" ".join(s.text for s in sequential)]),
        one_by_one=wer([u.text for u in longform.utterances], one_by_one),
    )


def test_wer_is_close_to_one_by_one_and_no_worse_than_sequential(run: Run):
    print(
        f"WER windowed {run.windowed.wer:.3f}, sequential {run.sequential.wer:.3f}, "
        f"one by one {run.one_by_one.wer:.3f} ({run.one_by_one.words} words)"
    )
    assert run.windowed.words == run.one_by_one.words
    assert run.windowed.wer <= 1.2 * run.one_by_one.wer
    assert run.windowed.wer <= run.sequential.wer


def test_segment_times_are_ordered_and_inside_the_audio(run: Run):
    assert run.segments
    starts = [s.start for s in run.segments]
    assert starts == sorted(starts)
    duration = run.longform.duration_s
    assert all(0.0 <= s.start <= s.end <= duration for s in run.segments)
    assert all(s.text.strip() for s in run.segments)


def test_segments_land_on_their_utterances(run: Run):
    # Every utterance of the file is covered by some segment that overlaps it.
    for utterance in run.longform.utterances:
        assert any(
            s.start < utterance.end_s + 0.5 and s.end > utterance.start_s - 0.5
            for s in run.segments
        ), utterance.utt_id


def test_word_timestamps_lie_inside_their_segments(transcriber: WhisperTranscriber, run: Run):
    first = run.longform.utterances[0]
    clip = run.longform.samples[: round((first.end_s + 1.0) * SAMPLE_RATE)]
    segments = transcriber.transcribe(clip, language="en", word_timestamps=True)
    words = [w for s in segments for w in (s.words or [])]
    assert words
    for segment in segments:
        for word in segment.words or []:
            assert segment.start - 0.05 <= word.start <= word.end <= segment.end + 0.05
    assert [w.start for w in words] == sorted(w.start for w in words)


def test_silence_and_faint_noise_give_no_segments(transcriber: WhisperTranscriber):
    rng = np.random.default_rng(1)
    silence = np.zeros(10 * SAMPLE_RATE, dtype=np.float32)
    noise = (rng.standard_normal(10 * SAMPLE_RATE) * 3e-5).astype(np.float32)
    assert transcriber.transcribe(silence) == []
    assert transcriber.transcribe(noise) == []
    assert transcriber.transcribe(np.zeros(0, dtype=np.float32)) == []


def test_plan_keeps_all_speech_and_brings_quiet_speech_up(
    transcriber: WhisperTranscriber, run: Run
):
    samples = run.longform.samples.copy()
    quiet = run.longform.utterances[1]
    lo, hi = round(quiet.start_s * SAMPLE_RATE), round(quiet.end_s * SAMPLE_RATE)
    samples[lo:hi] *= 0.01  # 40 dB down, next to speech at its normal level

    windows = transcriber.plan(samples)
    pieces = [p for w in windows for p in w.pieces]
    assert all(w.length <= transcriber.max_window_s * SAMPLE_RATE for w in windows)
    for utterance in run.longform.utterances:
        start, end = utterance.start_s * SAMPLE_RATE, utterance.end_s * SAMPLE_RATE
        covered = sum(max(0.0, min(p.end, end) - max(p.start, start)) for p in pieces)
        assert covered >= 0.9 * (end - start), utterance.utt_id
    inside = [p for p in pieces if lo <= (p.start + p.end) / 2 <= hi]
    assert inside
    assert all(p.gain > 10 for p in inside)
