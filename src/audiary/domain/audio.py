"""The canonical audio every stage shares: 16 kHz mono 16-bit PCM in a plain WAV file.

Ingest writes it once; the transcriber reads byte ranges of it; chunk planning and the
transcriber's window planning both look at its level envelope (`frame_db`).
"""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np
from numpy.typing import NDArray

SAMPLE_RATE = 16_000
WAV_HEADER_BYTES = 44  # the stdlib wave module writes a plain 44-byte PCM header
BYTES_PER_SAMPLE = 2
_EPS = 1e-12


def frame_db(
    samples: NDArray[Any], frame: int, *, smooth_frames: int = 1, pad: bool = False
) -> NDArray[Any]:
    """Level in dBFS of consecutive frames of `frame` samples (int16, or float in [-1, 1]).

    With `pad`, a last partial frame counts (zero-padded); otherwise it is left out.
    `smooth_frames` > 1 averages neighbouring frames in the power domain.
    """
    x = np.asarray(samples, dtype=np.float64)
    if samples.dtype == np.int16:
        x = x / 32768.0
    n = -(-len(x) // frame) if pad else len(x) // frame
    padded = np.zeros(n * frame, dtype=np.float64)
    padded[: min(len(x), n * frame)] = x[: n * frame]
    power = np.square(padded).reshape(n, frame).mean(axis=1) if n else np.zeros(0)
    if smooth_frames > 1:
        power = np.convolve(power, np.ones(smooth_frames) / smooth_frames, mode="same")
    db: NDArray[Any] = 10.0 * np.log10(power + _EPS)
    return db


def sample_range_bytes(start_sample: int, end_sample: int) -> tuple[int, int]:
    """Byte range [start, end) of samples [start_sample, end_sample) in a canonical WAV."""
    return (
        WAV_HEADER_BYTES + start_sample * BYTES_PER_SAMPLE,
        WAV_HEADER_BYTES + end_sample * BYTES_PER_SAMPLE,
    )


def pcm_to_float(data: bytes) -> NDArray[Any]:
    """Canonical s16 little-endian PCM bytes as float32 samples in [-1, 1]."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def wav_bytes(pcm: bytes) -> bytes:
    """Canonical PCM samples (a slice of the canonical audio) as a WAV file of their own."""
    out = io.BytesIO()
    with wave.open(out, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(BYTES_PER_SAMPLE)
        clip.setframerate(SAMPLE_RATE)
        clip.writeframes(pcm)
    return out.getvalue()
