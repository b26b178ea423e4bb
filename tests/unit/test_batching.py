"""The window batcher on its own: which windows share a model call and a model window, and
that every word goes back to the request whose audio it was in.

The model here reads a window's audio literally: each request's windows hold a constant level
of its own, and the "decoder" writes one word per 0.5 s naming the level it hears, so a word
that went back to the wrong request, or to the wrong time, shows.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from faster_whisper.transcribe import Segment, Word

from audiary.adapters.whisper.batching import WindowBatcher

RATE = 16000
STEP = 0.5


class LevelReader:
    """A decode function: per clip one segment, a word per 0.5 s saying the level heard there
    (`w<level>`); word times only when asked, as the real model."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, worker: int, audio: np.ndarray, clips: list[dict[str, float]],
                 key: Any, words: bool) -> list[Segment]:
        with self.lock:
            self.calls.append({"clips": clips, "words": words, "key": key})
        result = []
        for clip in clips:
            found = []
            t = clip["start"]
            while t + STEP <= clip["end"] + 1e-9:
                level = round(float(audio[int((t + STEP / 2) * RATE)]) * 100)
                found.append(Word(start=t, end=t + STEP, word=f" w{level}", probability=1.0))
                t += STEP
            result.append(Segment(
                id=0, seek=0, start=clip["start"], end=clip["end"],
                text="".join(w.word for w in found), tokens=[1, 2, 3], avg_logprob=-0.1,
                compression_ratio=1.0, no_speech_prob=0.0, words=found if words else None,
                temperature=0.0))
        return result


def windows_of(level: int, *seconds: float) -> list[np.ndarray]:
    return [np.full(int(s * RATE), level / 100, dtype=np.float32) for s in seconds]


def decode_together(batcher: WindowBatcher, requests: list[tuple[list[np.ndarray], Any]]):
    """Every request's `decode` from its own thread, released together."""
    barrier = threading.Barrier(len(requests))

    def run(request):
        windows, key = request
        barrier.wait()
        return batcher.decode(windows, key)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(run, requests))


def batcher(reader: LevelReader, **options: Any) -> WindowBatcher:
    # One worker and a long wait: every request below meets in one model call.
    settings = {"workers": 1, "max_windows": 16, "max_wait_s": 0.5, "merge_s": 25.0}
    return WindowBatcher(reader, **{**settings, **options})


def words_of(segments: list[Segment]) -> list[str]:
    return " ".join(s.text for s in segments).split()


def test_short_windows_of_different_requests_share_a_model_window_and_words_go_home():
    reader = LevelReader()
    levels = [10, 20, 30, 40]
    requests = [(windows_of(level, 4.0), "en") for level in levels]
    results = decode_together(batcher(reader), requests)
    # 4 windows of 4 s: one model window of 16 s, read with word times.
    assert len(reader.calls) == 1
    assert len(reader.calls[0]["clips"]) == 1
    assert reader.calls[0]["words"] is True
    for level, result in zip(levels, results, strict=True):
        (window,) = result
        assert words_of(window) == [f"w{level}"] * 8
        # Times relative to the request's own window, inside it.
        starts = [w.start for s in window for w in s.words]
        assert starts == pytest.approx([i * STEP for i in range(8)])
        assert all(0.0 <= s.start <= s.end <= 4.0 for s in window)
        assert all(s.tokens is None for s in window)  # a part's tokens are not known


def test_windows_that_do_not_fit_together_keep_their_own_model_window():
    reader = LevelReader()
    requests = [(windows_of(10, 20.0), "en"), (windows_of(20, 10.0), "en"),
                (windows_of(30, 4.0), "en")]
    results = decode_together(batcher(reader), requests)
    (call,) = reader.calls
    # 20 + 4 fit in 25 s; 10 does not fit with 20 + 4.
    assert sorted(c["end"] - c["start"] for c in call["clips"]) == pytest.approx([10.0, 24.0])
    assert [set(words_of(r[0])) for r in results] == [{"w10"}, {"w20"}, {"w30"}]
    assert [len(words_of(r[0])) for r in results] == [40, 20, 8]


def test_windows_of_one_request_are_never_merged_with_each_other():
    reader = LevelReader()
    (result,) = decode_together(batcher(reader), [(windows_of(10, 3.0, 3.0, 3.0), "en")])
    (call,) = reader.calls
    assert len(call["clips"]) == 3
    assert call["words"] is False
    assert [len(words_of(window)) for window in result] == [6, 6, 6]


@pytest.mark.parametrize("options", [
    {"merge_s": 0.0},
    {"across_requests": False},
    {"mergeable": lambda key: key != "en"},
])
def test_merging_is_off_when_asked_or_when_the_key_forbids_it(options):
    reader = LevelReader()
    requests = [(windows_of(level, 4.0), "en") for level in (10, 20)]
    results = decode_together(batcher(reader, **options), requests)
    assert sum(len(c["clips"]) for c in reader.calls) == 2
    assert not any(c["words"] for c in reader.calls)
    assert [words_of(r[0]) for r in results] == [["w10"] * 8, ["w20"] * 8]


def test_windows_with_different_keys_never_share_a_call():
    reader = LevelReader()
    results = decode_together(batcher(reader), [(windows_of(10, 4.0), "en"),
                                                (windows_of(20, 4.0), "de")])
    assert sorted(c["key"] for c in reader.calls) == ["de", "en"]
    assert [words_of(r[0]) for r in results] == [["w10"] * 8, ["w20"] * 8]


def test_a_failing_merged_call_is_run_again_request_by_request():
    reader = LevelReader()

    def decode(worker, audio, clips, key, words):
        if np.isnan(audio).any():
            raise ValueError("the model got NaN")
        return reader(worker, audio, clips, key, words)

    bad = [np.full(4 * RATE, np.nan, dtype=np.float32)]
    requests = [(windows_of(10, 4.0), "en"), (bad, "en"), (windows_of(30, 4.0), "en")]
    barrier = threading.Barrier(len(requests))
    shared = batcher(reader)
    shared._decode = decode

    def run(request):
        barrier.wait()
        try:
            return shared.decode(*request)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(3) as pool:
        good, failed, other = pool.map(run, requests)
    assert isinstance(failed, ValueError)
    assert words_of(good[0]) == ["w10"] * 8
    assert words_of(other[0]) == ["w30"] * 8


def test_a_segment_that_ends_in_the_next_windows_audio_is_kept_inside_its_own():
    def decode(worker, audio, clips, key, words):
        assert len(clips) == 1  # the 5 s window, then the 4 s one, in one model window
        first = [Word(start=0.5, end=3.0, word=" one", probability=1.0)]
        second = [Word(start=5.5, end=12.0, word=" two", probability=1.0)]  # past the end
        return [Segment(id=i, seek=0, start=start, end=end, text=ws[0].word, tokens=[i],
                        avg_logprob=-0.1, compression_ratio=1.0, no_speech_prob=0.0,
                        words=ws, temperature=0.0)
                for i, (start, end, ws) in enumerate([(0.0, 7.0, first), (5.0, 12.0, second)])]

    shared = WindowBatcher(decode, workers=1, max_windows=16, max_wait_s=0.5, merge_s=25.0)
    results = decode_together(shared, [(windows_of(10, 5.0), "en"), (windows_of(20, 4.0), "en")])
    (a,), (b,) = [r[0] for r in results]
    assert (a.text, a.start, a.end, a.tokens) == (" one", 0.0, 5.0, [0])
    assert (b.text, b.start, b.end, b.words[0].end) == (" two", 0.0, 4.0, 4.0)
