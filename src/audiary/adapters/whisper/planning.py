"""Window planning for the faster-whisper adapter: pure NumPy, no model.

Where the pauses are (an energy detector against the local noise floor), which pieces of
speech go into which <= 25 s window and with what gain, what a first pass left unread, and
how times in the rendered windows map back to the input. `engine.py` decodes the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from audiary.domain.audio import SAMPLE_RATE, frame_db
from audiary.domain.transcript import Segment, Word

__all__ = [
    "MAX_WINDOW_S",
    "MIN_PAUSE_S",
    "PAD_S",
    "Piece",
    "TimeMap",
    "Window",
    "pack_windows",
    "plan_windows",
    "render_windows",
    "snap_to_quiet",
    "split_at_pieces",
    "split_tokens",
    "unread_pieces",
]

_FRAME = 320  # 20 ms analysis frames
_FRAME_S = _FRAME / SAMPLE_RATE

MAX_WINDOW_S = 25.0
MIN_PAUSE_S = 0.3
PAD_S = 0.5


@dataclass(frozen=True)
class Piece:
    """Input samples [start, end) copied into a window, scaled by `gain`."""

    start: int
    end: int
    gain: float = 1.0

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Window:
    """Pieces decoded together as one Whisper window (their total is at most the window cap)."""

    pieces: tuple[Piece, ...]

    @property
    def length(self) -> int:
        return sum(p.length for p in self.pieces)


def _frame_db(samples: NDArray[Any], smooth_frames: int = 1) -> NDArray[Any]:
    """Level in dBFS of consecutive 20 ms frames (the last one zero-padded)."""
    return frame_db(samples, _FRAME, smooth_frames=smooth_frames, pad=True)


def _noise_floor(db: NDArray[Any], half_width: int, step: int = 10) -> NDArray[Any]:
    """Local noise floor: the 10th percentile of frame levels within +/- `half_width` frames.

    A percentile rather than the minimum, so that stretches of digital zero inside a
    recording do not drag the floor far below the real background.
    """
    padded = np.pad(db, half_width, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half_width + 1)[::step]
    coarse = np.percentile(windows, 10, axis=1)
    floor: NDArray[Any] = np.interp(np.arange(len(db)), np.arange(len(coarse)) * step, coarse)
    return floor


def _runs(mask: NDArray[Any]) -> list[tuple[int, int]]:
    """[start, end) index runs where `mask` is true."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _speech_regions(
    db: NDArray[Any],
    raw_db: NDArray[Any],
    *,
    min_pause_s: float,
    margin_db: float,
    min_peak_db: float,
) -> list[tuple[int, int]]:
    """Frame ranges of speech, separated by pauses of at least `min_pause_s`.

    A frame is quiet when its smoothed level `db` is within `margin_db` of the local noise
    floor. A region whose loudest raw frame is not `min_peak_db` above the floor is noise.
    Both are kept small on purpose: a missed pause only costs speed, a false one words.
    """
    floor = _noise_floor(db, int(3.0 / _FRAME_S))
    quiet = db < floor + margin_db
    min_pause = max(1, round(min_pause_s / _FRAME_S))
    pauses = [(a, b) for a, b in _runs(quiet) if b - a >= min_pause]
    regions = []
    position = 0
    for a, b in [*pauses, (len(db), len(db))]:
        if a > position and np.max(raw_db[position:a] - floor[position:a]) >= min_peak_db:
            regions.append((position, a))
        position = b
    return regions


def _split_long(
    start: int, end: int, db: NDArray[Any], max_frames: int, min_frames: int
) -> list[tuple[int, int]]:
    """Cut a frame range longer than `max_frames` at its quietest frames."""
    parts = []
    while end - start > max_frames:
        lo, hi = start + min_frames, start + max_frames
        cut = lo + int(np.argmin(db[lo:hi]))
        parts.append((start, cut))
        start = cut
    parts.append((start, end))
    return parts


def plan_windows(
    samples: NDArray[Any],
    *,
    max_window_s: float = MAX_WINDOW_S,
    min_pause_s: float = MIN_PAUSE_S,
    pad_s: float = PAD_S,
    margin_db: float = 4.0,
    min_peak_db: float = 6.0,
    target_db: float = -20.0,
    tolerance_db: float = 10.0,
    max_gain_db: float = 40.0,
    normalize: bool = True,
) -> list[Window]:
    """Split samples at pauses into speech pieces and pack them into windows.

    Each piece keeps `pad_s` of the pause on either side, so no word is cut; pauses longer than
    that are left out. With `normalize`, a piece whose loud frames are more than
    `tolerance_db` away from `target_db` dBFS is scaled to the edge of that band, so quiet
    talkers are brought up while normal speech keeps its natural level.
    """
    if len(samples) == 0:
        return []
    db = _frame_db(samples, smooth_frames=5)
    raw_db = _frame_db(samples)
    regions = _speech_regions(
        db, raw_db, min_pause_s=min_pause_s, margin_db=margin_db, min_peak_db=min_peak_db
    )
    pad = round(pad_s / _FRAME_S)
    max_frames = int((max_window_s - 2 * pad_s) / _FRAME_S)
    n_frames = len(db)
    pieces: list[Piece] = []
    for index, (a, b) in enumerate(regions):
        previous_end = regions[index - 1][1] if index else 0
        next_start = regions[index + 1][0] if index + 1 < len(regions) else n_frames
        for part_a, part_b in _split_long(a, b, db, max_frames, max_frames // 2):
            lo = max(part_a - pad, (previous_end + part_a) // 2) if part_a == a else part_a
            hi = min(part_b + pad, (part_b + next_start) // 2) if part_b == b else part_b
            gain = 1.0
            if normalize:
                off = target_db - float(np.percentile(raw_db[part_a:part_b], 95))
                gain_db = np.sign(off) * min(max(abs(off) - tolerance_db, 0.0), max_gain_db)
                gain = float(10.0 ** (gain_db / 20.0))
            pieces.append(Piece(lo * _FRAME, min(hi * _FRAME, len(samples)), gain))
    return pack_windows(pieces, max_window_s)


def pack_windows(
    pieces: Sequence[Piece],
    max_window_s: float,
    *,
    min_fill: float = 0.6,
    long_pause_s: float = 1.0,
) -> list[Window]:
    """Consecutive pieces, in order, into windows of at most `max_window_s`.

    A window ends at the last piece that fits, unless an earlier one (with the window at
    least `min_fill` full) is followed by a longer pause: cutting between sentences rather
    than inside one keeps each window's speech complete. Pauses of `long_pause_s` or more
    count as equally good.
    """
    limit = int(max_window_s * SAMPLE_RATE)
    long_pause = int(long_pause_s * SAMPLE_RATE)
    windows: list[Window] = []
    i = 0
    while i < len(pieces):
        total, j = 0, i
        best, best_pause = i, -1
        while j < len(pieces) and (j == i or total + pieces[j].length <= limit):
            total += pieces[j].length
            if j + 1 == len(pieces):
                best, best_pause = j, long_pause + 1
            else:
                pause = min(pieces[j + 1].start - pieces[j].end, long_pause)
                if total >= min_fill * limit and pause >= best_pause:
                    best, best_pause = j, pause
            j += 1
        if best_pause < 0:
            best = j - 1
        windows.append(Window(tuple(pieces[i : best + 1])))
        i = best + 1
    return windows


def unread_pieces(
    windows: Sequence[Window], segments: Sequence[Segment], *, min_rest_s: float = 1.0
) -> list[list[Piece]]:
    """What a first pass left without text, to decode again.

    Whisper stops a window at the last segment it thinks is complete, expecting the next
    window to start there; batched decoding has no next window. So per window: the rest of
    the piece where the last segment ends (if at least `min_rest_s` long), every piece after
    it, and any piece that no segment overlaps by more than a tenth of its length.
    Returns one list per window that has something unread.
    """
    starts = np.array([seg.start for seg in segments])
    ends = np.array([seg.end for seg in segments])
    result: list[list[Piece]] = []
    for window in windows:
        unread: list[Piece] = []
        w_lo = window.pieces[0].start / SAMPLE_RATE
        w_hi = window.pieces[-1].end / SAMPLE_RATE
        inside = (ends > w_lo) & (starts < w_hi)
        read_until = float(ends[inside].max()) if inside.any() else w_lo
        for piece in window.pieces:
            lo, hi = piece.start / SAMPLE_RATE, piece.end / SAMPLE_RATE
            overlap = float(np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None).sum())
            if read_until <= lo or overlap <= 0.1 * (hi - lo):
                unread.append(piece)
            elif read_until < hi - min_rest_s:
                unread.append(Piece(round(read_until * SAMPLE_RATE), piece.end, piece.gain))
        if unread:
            result.append(unread)
    return result


def split_at_pieces(
    segments: Sequence[Segment], pieces: Sequence[Piece], *, keep_words: bool
) -> list[Segment]:
    """Split segments (with word times) so that each holds the words of one piece only.

    Times are kept inside the piece, since a segment's end timestamp may fall after it.
    """
    starts = np.array([p.start / SAMPLE_RATE for p in pieces])
    result: list[Segment] = []
    for segment in segments:
        if not segment.words:
            result.append(segment)
            continue
        groups: list[tuple[int, list[Word]]] = []
        for word in segment.words:
            index = max(0, int(np.searchsorted(starts, word.start, side="right")) - 1)
            if not groups or groups[-1][0] != index:
                groups.append((index, []))
            groups[-1][1].append(word)
        for index, words in groups:
            lo, hi = starts[index], pieces[index].end / SAMPLE_RATE
            start = min(max(words[0].start, lo), hi)
            result.append(
                segment.model_copy(
                    update={
                        "start": start,
                        "end": max(start, min(words[-1].end, hi)),
                        "text": "".join(w.word for w in words).strip(),
                        "words": words if keep_words else None,
                        # The decoder's tokens were the whole segment's, not this part's.
                        "tokens": None,
                        "token_logprobs": None,
                    }
                )
            )
    return result


def snap_to_quiet(samples: NDArray[Any], piece: Piece, radius_s: float = 0.3) -> Piece:
    """Move a piece's start to the quietest 20 ms frame within `radius_s` of it."""
    radius = int(radius_s * SAMPLE_RATE)
    lo = max(0, piece.start - radius)
    hi = min(piece.end - _FRAME, piece.start + radius)
    if hi <= lo:
        return piece
    start = lo + int(np.argmin(_frame_db(samples[lo:hi]))) * _FRAME
    return Piece(start, piece.end, piece.gain)


def render_windows(samples: NDArray[Any], windows: Sequence[Window]) -> NDArray[Any]:
    """The windows' pieces, scaled and laid end to end (the audio the model decodes)."""
    parts = [
        samples[p.start : p.end].astype(np.float32) * np.float32(p.gain)
        for w in windows
        for p in w.pieces
    ]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    clipped: NDArray[Any] = np.clip(np.concatenate(parts), -1.0, 1.0)
    return clipped


class TimeMap:
    """Maps times in the rendered audio back to times in the input."""

    def __init__(self, windows: Sequence[Window]) -> None:
        pieces = [p for w in windows for p in w.pieces]
        lengths = np.array([p.length for p in pieces], dtype=np.int64)
        self.rendered_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        self.input_starts = np.array([p.start for p in pieces], dtype=np.int64)
        self.lengths = lengths

    def __call__(self, t: float, *, is_end: bool = False) -> float:
        sample = round(t * SAMPLE_RATE)
        side: Literal["left", "right"] = "left" if is_end else "right"
        index = max(0, int(np.searchsorted(self.rendered_starts, sample, side=side)) - 1)
        inside = min(max(sample - int(self.rendered_starts[index]), 0), int(self.lengths[index]))
        return (int(self.input_starts[index]) + inside) / SAMPLE_RATE


def split_tokens(
    tokens: Sequence[int], timestamp_begin: int, duration: float, precision: float = 0.02
) -> list[tuple[float, float, list[int]]]:
    """Split one window's tokens at timestamp tokens into (start, end, text tokens) segments.

    Unlike faster-whisper's splitter, text after the last timestamp is kept (it ends at
    `duration`): batched decoding never seeks back, so dropping it would lose those words.
    """
    segments: list[tuple[float, float, list[int]]] = []
    start: float | None = None
    last = 0.0
    text: list[int] = []
    for token in tokens:
        if token < timestamp_begin:
            text.append(token)
            continue
        t = min((token - timestamp_begin) * precision, duration)
        if text:
            segments.append((last if start is None else start, max(t, last), text))
            text, start, last = [], None, max(t, last)
        else:
            start = t
            last = max(last, t)
    if text:
        segments.append((last if start is None else start, max(duration, last), text))
    return segments
