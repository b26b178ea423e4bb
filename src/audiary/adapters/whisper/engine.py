"""faster-whisper adapter: the `Transcriber` port on CTranslate2 Whisper models.

`WhisperTranscriber.transcribe` does not run Whisper's sequential 30 s sliding window.
1. Plan (`plan_windows`): an energy detector relative to the local noise floor finds pauses
   of 0.3 s or more; the speech between them becomes pieces that keep up to 0.5 s of pause on
   each side (longer pauses are left out). A piece far quieter than normal speech is
   amplified. Pieces are packed in order into windows of at most 25 s, ending at long pauses
   where possible.
2. Decode: the windows go through faster-whisper's `BatchedInferencePipeline`
   (`clip_timestamps`, no VAD, timestamps on, greedy), split between the model's workers.
3. Re-read (`unread_pieces`): what a window left without text is packed and decoded again,
   at most `retries` rounds, with word times to put each word back at its own piece.

Why, from measurements on long-form real speech (bench/long_form.py, tiny.en int8, 2 CPU
cores): sequential decoding skips whole sentences (17 % WER on 10 minutes, against 5 % for
the utterances one by one), and the batched pipeline with its Silero VAD is worse (33 %):
Silero misses quiet talkers, and Whisper, which scales each window to its loudest part,
tends to skip a quiet talker next to a loud one. The per-piece gain fixes the latter (without
it WER was 1.5 to 2.6 times higher), the floor-relative detector the former. In a packed
window Whisper still stops early when it thinks the last sentence runs past the window,
which sequential decoding repairs by seeking; the re-read rounds do that in a batch. 25 s
windows leave room after the last sentence, and keeping pauses up to 1 s keeps disfluent
speech intact. Speed: few windows, greedy batched decoding, and two shares decoded at once,
which keeps both cores busy where sequential decoding uses about one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from audiary.adapters.whisper.planning import (
    MAX_WINDOW_S,
    MIN_PAUSE_S,
    PAD_S,
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
from audiary.domain.transcript import Segment, Word, repeats_itself
from audiary.ports import Transcriber
from audiary.settings import Settings

__all__ = ["WhisperTranscriber", "resolve_compute_type", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when CTranslate2 sees a GPU, else 'cpu'."""
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """'auto' becomes float16 on CUDA and int8 on CPU."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def _tail_keeping_pipeline(model: Any) -> Any:
    """A `BatchedInferencePipeline` whose windows keep text after their last timestamp."""
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.transcribe import get_compression_ratio

    class _Pipeline(BatchedInferencePipeline):  # type: ignore[misc]
        def forward(
            self, features: Any, tokenizer: Any, chunks_metadata: Any, options: Any
        ) -> list[list[dict[str, Any]]]:
            encoder_output, outputs = self.generate_segment_batched(features, tokenizer, options)
            fps = self.model.frames_per_second
            segmented, sizes = [], []
            for meta, output in zip(chunks_metadata, outputs, strict=True):
                duration, offset = meta["duration"], meta["offset"]
                sizes.append(int(math.ceil(duration) * fps))
                tokens = [
                    t
                    for t in output["tokens"]
                    if t < tokenizer.eot or t >= tokenizer.timestamp_begin
                ]
                pieces = (
                    [(0.0, duration, tokens)]
                    if options.without_timestamps
                    else split_tokens(tokens, tokenizer.timestamp_begin, duration)
                )
                segmented.append(
                    [
                        {
                            "text": tokenizer.decode(text),
                            "avg_logprob": output["avg_logprob"],
                            "no_speech_prob": output["no_speech_prob"],
                            "tokens": text,
                            "start": offset + start,
                            "end": offset + end,
                            "compression_ratio": get_compression_ratio(tokenizer.decode(text)),
                            "seek": int(offset * fps),
                        }
                        for start, end, text in pieces
                    ]
                )
            if options.word_timestamps:
                last_speech: float = getattr(self, "last_speech_timestamp", 0.0)
                self.last_speech_timestamp = self.model.add_word_timestamps(
                    segmented,
                    tokenizer,
                    encoder_output,
                    sizes,
                    options.prepend_punctuations,
                    options.append_punctuations,
                    last_speech,
                )
            return segmented

    return _Pipeline(model)


class WhisperTranscriber(Transcriber):
    """faster-whisper behind the `Transcriber` port; the model is loaded once, here.

    `workers` model replicas (CTranslate2 `num_workers`) decode shares of the windows at once.
    Thread safety: concurrent calls on one instance are safe but run one after another (an
    instance lock), because the batched pipelines keep state between batches.
    """

    word_timestamps_supported = True

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        beam_size: int = 1,
        batch_size: int = 16,
        language: str | None = None,
        word_timestamps: bool = False,
        max_window_s: float = MAX_WINDOW_S,
        min_pause_s: float = MIN_PAUSE_S,
        pad_s: float = PAD_S,
        normalize: bool = True,
        retries: int = 2,
        workers: int = 2,
        hotwords: str | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        self.device = resolve_device(device)
        self.compute_type = resolve_compute_type(compute_type, self.device)
        self.model_name = model_path
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.language = language
        self.word_timestamps = word_timestamps
        self.max_window_s = max_window_s
        self.min_pause_s = min_pause_s
        self.pad_s = pad_s
        self.normalize = normalize
        self.retries = retries
        self.hotwords = hotwords
        self._lock = threading.Lock()
        logger.info(
            "loading whisper model %s on %s (%s, %d cpu threads)",
            model_path,
            self.device,
            self.compute_type,
            cpu_threads,
        )
        self.model = WhisperModel(
            model_path,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            num_workers=workers,
        )
        self._pipelines = [_tail_keeping_pipeline(self.model) for _ in range(workers)]

    @classmethod
    def from_settings(cls, settings: Settings, *, hotwords: str | None = None
                      ) -> WhisperTranscriber:
        """Build from the model settings (`model_path`, `device`, `compute_type`, ...);
        `hotwords` (a vocabulary model's terms) go to the decoder with every window."""
        return cls(
            settings.resolved_model_path(),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            beam_size=settings.beam_size,
            batch_size=settings.batch_size,
            language=settings.language,
            workers=settings.decode_workers,
            hotwords=hotwords,
        )

    @property
    def supported_languages(self) -> Sequence[str] | None:
        return list(self.model.supported_languages)

    def detect_language(self, samples: NDArray[Any]) -> tuple[str, float] | None:
        language, probability, _ = self.model.detect_language(audio=samples)
        return str(language), float(probability)

    def tokenize(self, text: str) -> list[int]:
        tokenizer = self.model.hf_tokenizer
        return [int(i) for i in tokenizer.encode(text, add_special_tokens=False).ids]

    def plan(self, samples: NDArray[Any]) -> list[Window]:
        """The windows `transcribe` decodes first for these samples."""
        return plan_windows(
            np.asarray(samples, dtype=np.float32).reshape(-1),
            max_window_s=self.max_window_s,
            min_pause_s=self.min_pause_s,
            pad_s=self.pad_s,
            normalize=self.normalize,
        )

    def transcribe(
        self,
        samples: NDArray[Any],
        *,
        language: str | None = None,
        word_timestamps: bool | None = None,
    ) -> list[Segment]:
        """Segments of 16 kHz mono float32 `samples`, times relative to the first sample.

        Segments come sorted by start; `word_timestamps` (default: the instance's setting)
        adds word times.
        """
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        windows = self.plan(samples)
        if not windows:
            return []
        words = self.word_timestamps if word_timestamps is None else word_timestamps
        language = language or self.language
        rounds = 0
        with self._lock:
            result = self._decode(samples, windows, language, words)
            pending, unread = windows, self._unread(samples, windows, result)
            while unread and rounds < self.retries:
                # Pieces from far apart share these windows; word times tell which piece
                # each word came from, so no text lands at another piece's time.
                pending = pack_windows(unread, self.max_window_s)
                again = split_at_pieces(
                    self._decode(samples, pending, language, True), unread, keep_words=words
                )
                result += again
                unread = self._unread(samples, pending, again)
                rounds += 1
        result.sort(key=lambda seg: seg.start)
        logger.debug(
            "transcribed %.1f s: %d windows, %d retry rounds, %d segments",
            len(samples) / SAMPLE_RATE,
            len(windows),
            rounds,
            len(result),
        )
        return result

    def _unread(
        self, samples: NDArray[Any], windows: Sequence[Window], segments: Sequence[Segment]
    ) -> list[Piece]:
        # A rest starts at a timestamp, which can be a little inside a word.
        return [
            snap_to_quiet(samples, piece)
            for group in unread_pieces(windows, segments)
            for piece in group
        ]

    def _decode(
        self,
        samples: NDArray[Any],
        windows: Sequence[Window],
        language: str | None,
        word_timestamps: bool,
    ) -> list[Segment]:
        """Decode windows, split into contiguous shares run at once on the model's workers."""
        shares = min(len(self._pipelines), len(windows))
        if shares <= 1:
            return self._decode_share(
                self._pipelines[0], samples, windows, language, word_timestamps
            )
        bounds = np.linspace(0, len(windows), shares + 1).round().astype(int)
        with ThreadPoolExecutor(max_workers=shares) as pool:
            futures = [
                pool.submit(
                    self._decode_share,
                    pipeline,
                    samples,
                    windows[lo:hi],
                    language,
                    word_timestamps,
                )
                for pipeline, lo, hi in zip(self._pipelines, bounds[:-1], bounds[1:], strict=False)
            ]
            return [segment for future in futures for segment in future.result()]

    def _decode_share(
        self,
        pipeline: Any,
        samples: NDArray[Any],
        windows: Sequence[Window],
        language: str | None,
        word_timestamps: bool,
    ) -> list[Segment]:
        rendered = render_windows(samples, windows)
        clips, offset = [], 0
        for window in windows:
            end = offset + window.length
            clips.append({"start": offset / SAMPLE_RATE, "end": end / SAMPLE_RATE})
            offset = end
        segments, _ = pipeline.transcribe(
            rendered,
            language=language,
            beam_size=self.beam_size,
            batch_size=self.batch_size,
            without_timestamps=False,
            word_timestamps=word_timestamps,
            vad_filter=False,
            clip_timestamps=clips,
            hotwords=self.hotwords,
        )
        time_map = TimeMap(windows)
        duration = len(samples) / SAMPLE_RATE
        return [
            _to_segment(seg, time_map, duration)
            for seg in segments
            if seg.text.strip() and not _is_silence(seg) and not _is_loop(seg)
        ]

    def transcribe_sequential(
        self, samples: NDArray[Any], *, language: str | None = None, beam_size: int = 5
    ) -> list[Segment]:
        """Plain `WhisperModel.transcribe` over the whole array, the baseline.

        Uses faster-whisper's defaults (beam 5, no VAD), not this instance's decoding options.
        """
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        with self._lock:
            segments, _ = self.model.transcribe(
                samples,
                language=language or self.language,
                beam_size=beam_size,
                word_timestamps=self.word_timestamps,
                vad_filter=False,
            )
            raw = list(segments)
        return [_to_segment(seg, _identity, len(samples) / SAMPLE_RATE) for seg in raw]


def _is_silence(segment: Any) -> bool:
    """Whisper's own rule for a window that holds no speech."""
    return bool(segment.no_speech_prob > 0.6 and segment.avg_logprob < -1.0)


def _is_loop(segment: Any) -> bool:
    """Whisper's rule for a failed decode: text that compresses too well repeats itself.

    Dropping it leaves its piece unread, so the next round decodes it again.
    """
    return bool(segment.compression_ratio > 2.4)


def _identity(t: float, *, is_end: bool = False) -> float:
    return t


def _to_segment(segment: Any, time_map: Callable[..., float], duration: float) -> Segment:
    def clamp(t: float) -> float:
        return round(min(max(t, 0.0), duration), 3)

    start = clamp(time_map(segment.start))
    end = max(start, clamp(time_map(segment.end, is_end=True)))
    words = None
    if segment.words:
        words = []
        for word in segment.words:
            word_start = clamp(time_map(word.start))
            word_end = max(word_start, clamp(time_map(word.end, is_end=True)))
            words.append(
                Word(start=word_start, end=word_end, word=word.word, probability=word.probability)
            )
    return Segment(
        start=start,
        end=end,
        text=segment.text.strip(),
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        compression_ratio=(round(segment.compression_ratio, 3)
                           if segment.compression_ratio is not None else None),
        repetition=repeats_itself(segment.text),
        words=words,
    )
