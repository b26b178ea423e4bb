"""WhisperTranscriber on real speech: long-form quality close to utterances one by one.

Quality is scored on the whole real-speech set (the setting AUDIARY_SPEECH_DIR, default
../shared/speech; never copied): every utterance once, in two seeded orders with seeded pauses
(`full_set`, 2 x ~5 min, 1348 reference words), against the same utterances decoded one by one
and plain sequential faster-whisper. The model is the packaged tiny.en, the compute type the
setting AUDIARY_COMPUTE_TYPE (int8 on CPU by default).

The bound comes from the spread measured across CPU kernels: pooled windowed / one-by-one WER
was 1.04-1.32 with int8 under every CT2_FORCE_CPU_ISA and with oneDNN or MKL limited to AVX2 or
AVX-512 (the paths of other CPUs), and 1.28 with float32 (README, "Quality across CPUs").
Every figure is repeatable: greedy batched decoding never samples, and the baseline's sampling
runs on its own seeded single-worker model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

from audiary.adapters.whisper.engine import WhisperTranscriber
from audiary.domain.audio import SAMPLE_RATE
from audiary.domain.transcript import Segment
from audiary.evaluation.baseline import baseline_transcriber
from audiary.evaluation.longform import LongForm, full_set
from audiary.evaluation.wer import WerResult, wer
from audiary.settings import Settings
from tests.speech import require_speech

pytestmark = pytest.mark.integration

SEEDS = (0, 1)
# Windowed WER at most this many times the one-by-one WER, pooled over SEEDS: above the
# largest ratio measured across compute types and CPU kernel sets (1.32, int8 with MKL limited
# to AVX2), with room for CPUs not tried.
ONE_BY_ONE_BOUND = 1.4


@dataclass(frozen=True)
class Run:
    longform: LongForm  # the first seed's file
    segments: list[Segment]  # of the first seed's file
    windowed: WerResult
    sequential: WerResult
    one_by_one: WerResult


def _pooled(results: list[WerResult]) -> WerResult:
    return WerResult(
        wer=sum(r.errors for r in results) / sum(r.words for r in results),
        errors=sum(r.errors for r in results), words=sum(r.words for r in results),
        substitutions=sum(r.substitutions for r in results),
        deletions=sum(r.deletions for r in results),
        insertions=sum(r.insertions for r in results), hits=sum(r.hits for r in results))


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    settings = Settings()
    return WhisperTranscriber(
        settings.resolved_model_path(), device="cpu", compute_type=settings.compute_type,
        cpu_threads=os.cpu_count() or 0,
    )


@pytest.fixture(scope="module")
def run(transcriber: WhisperTranscriber) -> Run:
    require_speech()
    settings = Settings()
    baseline = baseline_transcriber(settings.resolved_model_path(),
                                    compute_type=settings.compute_type,
                                    cpu_threads=os.cpu_count() or 0)
    windowed, sequential, one_by_one = [], [], []
    files, first_segments = [], []
    for seed in SEEDS:
        longform = full_set(seed)
        samples = longform.samples
        segments = transcriber.transcribe(samples, language="en")
        files.append(longform)
        first_segments = first_segments or segments
        windowed.append(wer([longform.reference], [" ".join(s.text for s in segments)]))
        plain = baseline.transcribe_sequential(samples, language="en")
        sequential.append(wer([longform.reference], [" ".join(s.text for s in plain)]))
        alone = [
            " ".join(s.text for s in baseline.transcribe_sequential(
                samples[round(u.start_s * SAMPLE_RATE) : round(u.end_s * SAMPLE_RATE)],
                language="en"))
            for u in longform.utterances
        ]
        one_by_one.append(wer([u.text for u in longform.utterances], alone))
    return Run(longform=files[0], segments=first_segments, windowed=_pooled(windowed),
               sequential=_pooled(sequential), one_by_one=_pooled(one_by_one))


def test_wer_is_close_to_one_by_one_and_no_worse_than_sequential(run: Run):
    print(
        f"WER windowed {run.windowed.errors}/{run.windowed.words} = {run.windowed.wer:.4f}, "
        f"sequential {run.sequential.errors} = {run.sequential.wer:.4f}, "
        f"one by one {run.one_by_one.errors} = {run.one_by_one.wer:.4f}, "
        f"ratio {run.windowed.errors / max(run.one_by_one.errors, 1):.3f}"
    )
    assert run.windowed.words == run.one_by_one.words == run.sequential.words >= 1300
    assert run.windowed.errors <= ONE_BY_ONE_BOUND * run.one_by_one.errors
    assert run.windowed.errors <= run.sequential.errors


def test_decoding_the_same_audio_twice_gives_the_same_segments(
    transcriber: WhisperTranscriber, run: Run
):
    clip = run.longform.samples[: 60 * SAMPLE_RATE]
    assert transcriber.transcribe(clip, language="en") == transcriber.transcribe(
        clip, language="en")


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


def test_one_pass_over_planned_windows_reads_those_windows_only(
        transcriber: WhisperTranscriber, run: Run):
    samples = run.longform.samples
    windows = transcriber.plan(samples)[2:4]
    spans = [(w.pieces[0].start / SAMPLE_RATE, w.pieces[-1].end / SAMPLE_RATE) for w in windows]
    segments = transcriber.decode_windows(samples, windows, language="en")
    assert segments
    assert all(any(lo - 0.05 <= s.start <= s.end <= hi + 0.05 for lo, hi in spans)
               for s in segments), (spans, [(s.start, s.end) for s in segments])
    spoken = [u.text for u in run.longform.utterances
              if any(u.start_s < hi and u.end_s > lo for lo, hi in spans)]
    assert spoken
    assert wer([" ".join(spoken)], [" ".join(s.text for s in segments)]).wer < 0.35


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


def test_real_speech_carries_the_quality_signals_and_is_mostly_certain(run: Run):
    assert all(s.avg_logprob is not None and s.no_speech_prob is not None
               and s.compression_ratio is not None for s in run.segments)
    unsure = [s for s in run.segments if s.uncertain]
    print(f"{len(unsure)} of {len(run.segments)} segments uncertain")
    assert len(unsure) <= 0.2 * len(run.segments), [s.text for s in unsure]


def test_a_window_the_decoder_skipped_is_read_again(monkeypatch):
    """On the hour built from the speech set (seed 0), tiny.en once decoded a 24 s window of
    five sentences (1521.6-1545.8 s) as one segment of 8 words; such a sparse segment is read
    again, and here every sentence comes back."""
    require_speech()
    from audiary.adapters.whisper import engine
    from audiary.evaluation.longform import build_longform

    hour = build_longform(3600.0, seed=0)
    model = WhisperTranscriber("tiny.en", device="cpu", cpu_threads=os.cpu_count() or 0)
    windows = model.plan(hour.samples)
    (at,) = [i for i, w in enumerate(windows) if abs(w.pieces[0].start - 1521.6 * 16000) < 3200]
    span = windows[at].pieces[0].start / 16000, windows[at].pieces[-1].end / 16000
    said = [u.text for u in hour.utterances if span[0] - 1 <= u.start_s and u.end_s <= span[1] + 1]
    assert len(said) >= 3

    def heard(segments: list[Segment]) -> str:
        return " ".join(s.text for s in segments if span[0] <= s.start < span[1])

    def decoded() -> list[Segment]:  # the window with the 16 around it, as in the hour
        return model._transcribe(hour.samples, windows[at - 8:at + 8], language="en",
                                 word_timestamps=False, options=engine.DEFAULT_DECODE)

    assert wer([" ".join(said)], [heard(decoded())]).wer <= 0.2
    monkeypatch.setattr(engine, "SPARSE_MIN_S", float("inf"))
    without = wer([" ".join(said)], [heard(decoded())])
    if without.wer <= 0.2:
        pytest.skip("this CPU decodes the window whole even without the rule")
    assert without.deletions > 20
