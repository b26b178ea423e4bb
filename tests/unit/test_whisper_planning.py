"""Window planning of the faster-whisper adapter, on synthetic signals (no model).

Speech is stood in for by noise bursts with a 4 Hz syllable envelope; pauses hold a faint
noise floor, as real recordings do.
"""

from __future__ import annotations

import numpy as np
import pytest

from audiary.adapters.whisper.planning import (
    MAX_WINDOW_S,
    Piece,
    TimeMap,
    Window,
    pack_windows,
    plan_windows,
    render_windows,
    snap_to_quiet,
    split_at_pieces,
    split_tokens,
    unread_pieces,
)
from audiary.domain.audio import SAMPLE_RATE
from audiary.domain.transcript import Segment, Word

FLOOR_RMS = 3e-4  # about -70 dBFS


def _speech(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    burst = rng.standard_normal(n) * envelope
    burst *= 10 ** (dbfs / 20) / np.sqrt(np.mean(burst**2))
    return burst.astype(np.float32)


def _pause(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * FLOOR_RMS).astype(np.float32)


def _recording(parts: list[tuple[str, float, float]], seed: int = 0) -> tuple[np.ndarray,
                                                                             list[tuple[int, int]]]:
    """Concatenate ("speech", seconds, dBFS) and ("pause", seconds, _) parts; also returns
    the sample ranges of the speech parts."""
    rng = np.random.default_rng(seed)
    pieces, spans, position = [], [], 0
    for kind, seconds, dbfs in parts:
        audio = _speech(seconds, dbfs, rng) if kind == "speech" else _pause(seconds, rng)
        if kind == "speech":
            spans.append((position, position + len(audio)))
        pieces.append(audio)
        position += len(audio)
    return np.concatenate(pieces), spans


def _pieces(windows: list[Window]) -> list[Piece]:
    return [p for w in windows for p in w.pieces]


def test_pauses_split_speech_into_padded_pieces_that_keep_every_word():
    samples, spans = _recording([("pause", 1.0, 0), ("speech", 3.0, -20), ("pause", 2.0, 0),
                                 ("speech", 2.0, -20), ("pause", 1.5, 0)])
    pieces = _pieces(plan_windows(samples))
    assert len(pieces) == 2
    for piece, (start, end) in zip(pieces, spans, strict=True):
        assert piece.start <= start  # no speech cut off
        assert piece.end >= end
        # the 0.5 s pad of pause on each side, plus what the 100 ms level smoothing and the
        # 20 ms frames add to the detected edge (at most 3 frames)
        assert start - piece.start <= 0.56 * SAMPLE_RATE
        assert piece.end - end <= 0.56 * SAMPLE_RATE


def test_a_short_pause_does_not_split():
    samples, _ = _recording([("pause", 1.0, 0), ("speech", 2.0, -20), ("pause", 0.15, 0),
                             ("speech", 2.0, -20), ("pause", 1.0, 0)])
    assert len(_pieces(plan_windows(samples))) == 1


def test_silence_and_a_noise_floor_alone_give_no_windows():
    rng = np.random.default_rng(3)
    assert plan_windows(np.zeros(5 * SAMPLE_RATE, dtype=np.float32)) == []
    assert plan_windows(_pause(5.0, rng)) == []
    assert plan_windows(np.zeros(0, dtype=np.float32)) == []


def test_quiet_speech_gets_gain_and_normal_speech_keeps_its_level():
    samples, _ = _recording([("pause", 1.0, 0), ("speech", 2.0, -20), ("pause", 1.5, 0),
                             ("speech", 2.0, -55), ("pause", 1.0, 0)])
    loud, quiet = _pieces(plan_windows(samples))
    assert loud.gain == 1.0
    # raised to the edge of the target band: about 55 - 20 - 10 dB, from the loud frames
    assert 20 <= 20 * np.log10(quiet.gain) <= 30
    assert _pieces(plan_windows(samples, normalize=False))[1].gain == 1.0


def test_a_piece_longer_than_a_window_is_cut_at_its_quietest_point():
    samples, _ = _recording([("pause", 0.5, 0), ("speech", 1.5 * MAX_WINDOW_S, -20),
                             ("pause", 0.5, 0)])
    windows = plan_windows(samples)
    assert len(windows) == 2
    assert all(w.length <= MAX_WINDOW_S * SAMPLE_RATE for w in windows)
    first, second = _pieces(windows)
    assert first.end == second.start  # cut, nothing lost or doubled


def _piece(start_s: float, end_s: float) -> Piece:
    return Piece(round(start_s * SAMPLE_RATE), round(end_s * SAMPLE_RATE))


def test_packing_keeps_order_respects_the_cap_and_ends_at_long_pauses():
    # 6 s pieces; a long pause after the third: the first window should end there.
    pieces = [_piece(0, 6), _piece(6.2, 12.2), _piece(12.4, 18.4), _piece(21, 27),
              _piece(27.2, 33.2)]
    windows = pack_windows(pieces, 25.0)
    assert [p for w in windows for p in w.pieces] == pieces
    assert all(w.length <= 25 * SAMPLE_RATE for w in windows)
    assert windows[0].pieces[-1] == pieces[2]


def test_packing_puts_a_piece_above_the_cap_in_a_window_of_its_own():
    pieces = [_piece(0, 30), _piece(31, 35)]
    windows = pack_windows(pieces, 25.0)
    assert [w.pieces for w in windows] == [(pieces[0],), (pieces[1],)]


def test_time_map_takes_rendered_times_back_to_the_input():
    windows = [Window((_piece(10, 12), _piece(20, 21))), Window((_piece(30, 33),))]
    time_map = TimeMap(windows)
    assert time_map(0.0) == 10.0
    assert time_map(1.5) == pytest.approx(11.5)
    assert time_map(2.5) == pytest.approx(20.5)  # 2 s into the render: the second piece
    assert time_map(3.0 + 1.0) == pytest.approx(31.0)
    # An end time on a boundary belongs to the piece before it.
    assert time_map(2.0, is_end=True) == pytest.approx(12.0)
    assert time_map(2.0) == pytest.approx(20.0)


def test_render_scales_each_piece_and_lays_them_end_to_end():
    samples = np.ones(4 * SAMPLE_RATE, dtype=np.float32) * 0.01
    windows = [Window((Piece(0, SAMPLE_RATE, gain=2.0), Piece(2 * SAMPLE_RATE, 3 * SAMPLE_RATE)))]
    rendered = render_windows(samples, windows)
    assert len(rendered) == 2 * SAMPLE_RATE
    assert rendered[:SAMPLE_RATE] == pytest.approx(0.02)
    assert rendered[SAMPLE_RATE:] == pytest.approx(0.01)
    assert len(render_windows(samples, [])) == 0


def test_split_tokens_keeps_text_after_the_last_timestamp():
    begin = 1000  # timestamp tokens start here; 0.02 s each
    tokens = [begin + 0, 1, 2, begin + 50, begin + 50, 3, begin + 100, 4, 5]
    assert split_tokens(tokens, begin, duration=3.0) == [
        (0.0, 1.0, [1, 2]), (1.0, 2.0, [3]), (2.0, 3.0, [4, 5])]


def test_unread_pieces_finds_what_a_window_left_without_text():
    window = Window((_piece(0, 5), _piece(6, 11), _piece(12, 17)))
    # Text for the first piece and half of the second; nothing for the third.
    segments = [Segment(start=0.2, end=4.8, text="a"), Segment(start=6.1, end=8.0, text="b")]
    (unread,) = unread_pieces([window], segments)
    assert unread[0] == Piece(8 * SAMPLE_RATE, 11 * SAMPLE_RATE)  # the rest of piece two
    assert unread[1] == window.pieces[2]
    assert unread_pieces([window], [Segment(start=0, end=17, text="all")]) == []


def test_split_at_pieces_gives_each_piece_its_own_words():
    pieces = [_piece(0, 2), _piece(10, 12)]
    words = [Word(start=0.1, end=0.5, word=" one", probability=0.9),
             Word(start=10.2, end=12.4, word=" two", probability=0.9)]
    segment = Segment(start=0.1, end=12.4, text="one two", words=words)
    first, second = split_at_pieces([segment], pieces, keep_words=False)
    assert (first.text, first.start, first.end) == ("one", 0.1, 0.5)
    assert (second.text, second.start, second.end) == ("two", 10.2, 12.0)  # kept inside
    assert second.words is None


def test_snap_to_quiet_moves_a_start_into_the_nearest_pause():
    samples, spans = _recording([("pause", 1.0, 0), ("speech", 2.0, -20), ("pause", 0.4, 0),
                                 ("speech", 2.0, -20)])
    pause_start, pause_end = spans[0][1], spans[1][0]
    inside_word = Piece(pause_end + int(0.1 * SAMPLE_RATE), len(samples))
    snapped = snap_to_quiet(samples, inside_word)
    assert pause_start <= snapped.start < pause_end
    assert snapped.end == inside_word.end


def test_a_long_segment_with_few_tokens_is_sparse_and_yields_to_what_covers_it():
    from types import SimpleNamespace

    from audiary.adapters.whisper.engine import _covered, _is_sparse
    from audiary.domain.transcript import Segment

    def decoded(start: float, end: float, tokens: int | None) -> SimpleNamespace:
        return SimpleNamespace(start=start, end=end,
                               tokens=None if tokens is None else list(range(tokens)))

    assert _is_sparse(decoded(0.0, 24.0, 10))  # 8 words for five sentences
    assert not _is_sparse(decoded(0.0, 24.0, 60))  # 2.5 tokens a second: speech
    assert not _is_sparse(decoded(0.0, 6.0, 2))  # short: a word or two may be all there is
    assert not _is_sparse(decoded(0.0, 24.0, None))  # a part of a shared window: unknown
    sparse = Segment(start=10.0, end=30.0, text="few words")
    assert _covered(sparse, [Segment(start=9.0, end=15.0, text="a"),
                             Segment(start=16.0, end=22.0, text="b")])
    assert not _covered(sparse, [Segment(start=9.0, end=15.0, text="a")])
