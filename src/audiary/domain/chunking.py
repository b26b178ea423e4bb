"""Chunk planning: split long audio near a target length, cutting only in quiet places."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from audiary.domain.audio import SAMPLE_RATE

FRAME = 160  # 10 ms at 16 kHz: the resolution of the energy envelope (`frame_db(x, FRAME)`)
_SMOOTH_FRAMES = 20  # judge quietness over 200 ms so a cut never lands between two syllables


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
