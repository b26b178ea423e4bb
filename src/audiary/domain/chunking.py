"""Chunk planning: how long a chunk may be, and where to cut, only in quiet places."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from audiary.domain.audio import SAMPLE_RATE

FRAME = 160  # 10 ms at 16 kHz: the resolution of the energy envelope (`frame_db(x, FRAME)`)
_SMOOTH_FRAMES = 20  # judge quietness over 200 ms so a cut never lands between two syllables


# Seconds of decoding per second of audio through the pipeline's decoder, by (model, device):
# CPU int8 on 2 cores from `make bench` (bench/models.py, bench/results/models.json), the slower
# of the two CPUs measured (an AMD EPYC with AVX2 only; an Intel Xeon with AVX-512 VNNI and AMX
# took 0.021 and 0.041), so that a chunk fits its deadline on either; the GPU figures are
# estimates for an NVIDIA L4, float16, not measured here.
REALTIME_FACTORS: dict[tuple[str, str], float] = {
    ("tiny.en", "cpu"): 0.028,
    ("base", "cpu"): 0.052,
    ("tiny.en", "cuda"): 0.005,
    ("base", "cuda"): 0.007,
    ("small", "cuda"): 0.012,
    ("large-v3-turbo", "cuda"): 0.02,
    ("distil-large-v3", "cuda"): 0.02,
    ("large-v3", "cuda"): 0.05,
}
# A model the table does not know: assume it is slow (a large model on CPU is near 0.5).
UNKNOWN_REALTIME_FACTOR = {"cpu": 0.5, "cuda": 0.05}
# One chunk's decode must fit the ack deadline this many times over (a slow instance, a model
# load before it, a redelivery that lands behind other chunks).
CHUNK_MARGIN = 3.0


def realtime_factor(model: str, device: str) -> float:
    """The decoder's measured (or, where marked, estimated) real-time factor; "auto" counts as
    the CPU, the slower of the two."""
    device = "cuda" if device == "cuda" else "cpu"
    return REALTIME_FACTORS.get((model, device), UNKNOWN_REALTIME_FACTOR[device])


def chunk_length_s(target_s: float, *, realtime_factor: float, ack_deadline_s: float,
                   concurrency: int, margin: float = CHUNK_MARGIN) -> float:
    """The chunk length ingest uses: `target_s`, or less when a chunk of that length would not
    decode within the ack deadline `margin` times over while `concurrency` chunks share the
    instance (their windows share model calls, so each takes longer)."""
    return min(target_s, ack_deadline_s / (margin * realtime_factor * concurrency))


@dataclass(frozen=True)
class ChunkSpan:
    start_sample: int
    end_sample: int

    @property
    def duration_s(self) -> float:
        return (self.end_sample - self.start_sample) / SAMPLE_RATE


def plan_chunks(
    levels_db: NDArray[Any], total_samples: int, *, target_s: float, search_s: float
) -> list[ChunkSpan]:
    """Chunk spans covering [0, total_samples) with no gap and no overlap.

    Each cut goes to the quietest 200 ms stretch within `search_s` of `target_s` after the
    previous cut (ties go to the point nearest the target). A tail shorter than the search
    window joins the last chunk rather than becoming a sliver.
    """
    target = max(1, round(target_s * SAMPLE_RATE / FRAME))
    search = round(search_s * SAMPLE_RATE / FRAME)
    n_frames = len(levels_db)
    kernel = np.ones(_SMOOTH_FRAMES, dtype=np.float32) / _SMOOTH_FRAMES
    smooth = np.convolve(levels_db, kernel, mode="same") if n_frames else levels_db
    total_frames = total_samples // FRAME

    cuts: list[int] = []
    pos = 0
    while total_frames - pos > target + search:
        lo = max(pos + 1, pos + target - search)
        hi = min(n_frames, pos + target + search + 1)
        window = smooth[lo:hi]
        if len(window) == 0:
            break
        quietest = window.min()
        candidates = np.flatnonzero(window <= quietest + 0.5) + lo
        cut = int(candidates[np.argmin(np.abs(candidates - (pos + target)))])
        cuts.append(cut)
        pos = cut
    bounds = [0, *(c * FRAME for c in cuts), total_samples]
    return [ChunkSpan(a, b) for a, b in itertools.pairwise(bounds) if b > a]
