"""The encoder outputs language detection lends to the model call that decodes the same
window: only windows not kept are encoded, each kept output is used once, the oldest go."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from audiary.adapters.whisper.engine import _EncoderCache


def features(seed: int) -> NDArray[Any]:
    return np.random.default_rng(seed).standard_normal((4, 30)).astype(np.float32)


class Encoder:
    """A stand-in encoder: each window's output is its features summed over mel bins, so
    which windows it was given shows in what it returns."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, batch: NDArray[Any]) -> NDArray[Any]:
        self.calls.append(len(batch))
        return batch.sum(axis=1, keepdims=True)


def test_nothing_kept_passes_the_batch_straight_through():
    encoder, batch = Encoder(), np.stack([features(1), features(2)])
    assert np.array_equal(_EncoderCache().encode(encoder, batch), encoder(batch))
    assert encoder.calls == [2, 2]


def test_only_the_windows_not_kept_are_encoded_and_each_kept_output_is_used_once():
    cache, encoder = _EncoderCache(), Encoder()
    batch = np.stack([features(1), features(2), features(3)])
    kept = np.full((1, 30), 7.0, dtype=np.float32)  # not what the encoder would give
    cache.put(features(2), kept)
    out = np.asarray(cache.encode(encoder, batch))
    assert encoder.calls == [2]  # windows 1 and 3
    assert np.array_equal(out[0], encoder(batch[:1])[0])
    assert np.array_equal(out[1], kept)
    assert np.array_equal(out[2], encoder(batch[2:])[0])
    assert cache.hits == 1
    again = np.asarray(cache.encode(encoder, batch))  # taken: encoded this time
    assert np.array_equal(again[1], encoder(batch[1:2])[0])


def test_a_batch_all_kept_calls_no_encoder_and_the_oldest_go_past_capacity():
    cache, encoder = _EncoderCache(capacity=2), Encoder()
    for seed in (1, 2, 3):
        cache.put(features(seed), np.full((1, 30), float(seed), dtype=np.float32))
    out = np.asarray(cache.encode(encoder, np.stack([features(2), features(3)])))
    assert encoder.calls == []
    assert out[:, 0, 0].tolist() == [2.0, 3.0]
    np.asarray(cache.encode(encoder, features(1)[np.newaxis]))  # 1 was pushed out
    assert encoder.calls == [1]
