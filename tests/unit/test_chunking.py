import itertools

import numpy as np
import pytest

from audiary.domain.audio import SAMPLE_RATE, frame_db
from audiary.domain.chunking import (
    FRAME,
    REALTIME_FACTORS,
    UNKNOWN_REALTIME_FACTOR,
    chunk_length_s,
    plan_chunks,
    realtime_factor,
)


def speech_with_gaps(seed: int, n: int = 30):
    """Tone bursts ("speech") of 2-9 s separated by 0.3-1.5 s of near-silence."""
    rng = np.random.default_rng(seed)
    parts, gaps, pos = [], [], 0
    for _ in range(n):
        length = int(rng.uniform(2, 9) * SAMPLE_RATE)
        t = np.arange(length)
        parts.append(0.3 * np.sin(2 * np.pi * 220 * t / SAMPLE_RATE) * (1 + 0.5 * np.sin(t / 900)))
        pos += length
        gap = int(rng.uniform(0.3, 1.5) * SAMPLE_RATE)
        gaps.append((pos, pos + gap))
        parts.append(rng.normal(0, 1e-3, gap))
        pos += gap
    return np.concatenate(parts).astype(np.float32), gaps


@pytest.mark.parametrize("seed", range(5))
def test_cuts_land_in_silence(seed):
    samples, gaps = speech_with_gaps(seed)
    spans = plan_chunks(frame_db(samples, FRAME), len(samples), target_s=20, search_s=6)
    assert len(spans) > 3
    for span in spans[1:]:
        assert any(a <= span.start_sample < b for a, b in gaps), span


@pytest.mark.parametrize("seed", range(3))
def test_spans_cover_everything_once(seed):
    samples, _ = speech_with_gaps(seed)
    spans = plan_chunks(frame_db(samples, FRAME), len(samples), target_s=20, search_s=6)
    assert spans[0].start_sample == 0
    assert spans[-1].end_sample == len(samples)
    assert all(a.end_sample == b.start_sample for a, b in itertools.pairwise(spans))
    assert all(14 <= s.duration_s <= 26 for s in spans[:-1])


def test_short_audio_is_one_chunk_and_tail_is_not_a_sliver():
    samples, _ = speech_with_gaps(1, n=3)
    assert len(plan_chunks(frame_db(samples, FRAME), len(samples), target_s=300, search_s=15)) == 1
    samples = np.zeros(int(62 * SAMPLE_RATE), np.float32)
    spans = plan_chunks(frame_db(samples, FRAME), len(samples), target_s=30, search_s=5)
    assert [round(s.duration_s) for s in spans] == [30, 32]


def test_without_silence_cut_stays_near_target():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.2, 100 * SAMPLE_RATE).astype(np.float32)
    spans = plan_chunks(frame_db(noise, FRAME), len(noise), target_s=30, search_s=5)
    assert all(25 <= s.duration_s <= 35 for s in spans[:-1])


def test_frame_db_levels():
    samples = np.concatenate([np.zeros(1600), np.full(1600, 0.5)]).astype(np.float32)
    levels = frame_db(samples, FRAME)
    assert len(levels) == 20
    assert levels[:10].max() < -100
    assert levels[10:] == pytest.approx(20 * np.log10(0.5), abs=0.01)


def test_a_chunk_is_as_long_as_its_decode_fits_the_ack_deadline_three_times_over():
    # base on CPU with 4 chunks at once: 300 s chunks would take 0.06 x 300 x 4 = 72 s of the
    # 600 s deadline; kept.
    assert chunk_length_s(300, realtime_factor=0.06, ack_deadline_s=600, concurrency=4) == 300
    # A large model on CPU (0.5): 600 / (3 x 0.5 x 4) = 100 s.
    assert chunk_length_s(300, realtime_factor=0.5, ack_deadline_s=600, concurrency=4) == 100
    assert chunk_length_s(300, realtime_factor=0.5, ack_deadline_s=600, concurrency=1) == 300
    assert chunk_length_s(300, realtime_factor=0.5, ack_deadline_s=60, concurrency=1) == 40


def test_the_real_time_factor_is_the_measured_one_and_slow_for_models_it_does_not_know():
    assert realtime_factor("base", "cpu") == REALTIME_FACTORS[("base", "cpu")]
    assert realtime_factor("base", "auto") == REALTIME_FACTORS[("base", "cpu")]  # the slower
    assert realtime_factor("tiny.en", "cuda") < realtime_factor("tiny.en", "cpu")
    assert realtime_factor("my-own@3", "cpu") == UNKNOWN_REALTIME_FACTOR["cpu"] == 0.5


def test_ingest_cuts_shorter_chunks_for_a_slow_model(tmp_path):
    from audiary.services.ingest import chunk_target
    from audiary.settings import Settings

    assert chunk_target(Settings(model="base", chunk_target_s=300)) == 300
    slow = Settings(model="large-v3", device="cpu", chunk_target_s=300)
    assert chunk_target(slow) == 600 / (3 * 0.5 * 4)
    assert chunk_target(slow.model_copy(update={"realtime_factor": 1.0})) == 50
