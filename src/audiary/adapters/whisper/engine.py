"""faster-whisper adapter: the `Transcriber` port on CTranslate2 Whisper models.

`WhisperTranscriber.transcribe` does not run Whisper's sequential 30 s sliding window.
1. Plan (`plan_windows`): an energy detector relative to the local noise floor finds pauses
   of 0.3 s or more; the speech between them becomes pieces that keep up to 0.5 s of pause on
   each side (longer pauses are left out). A piece far quieter than normal speech is
   amplified. Pieces are packed in order into windows of at most 25 s, ending at long pauses
   where possible.
2. Decode: the windows go through faster-whisper's `BatchedInferencePipeline`
   (`clip_timestamps`, no VAD, timestamps on, greedy), fed by the `WindowBatcher`
   (batching.py): the model's workers take windows of every call waiting, so concurrent
   chunks share model calls (and, with `batch_merge_windows`, short windows of different chunks
   one Whisper window).
   One language per call: detected first when none is set.
3. Re-read (`unread_pieces`): what a window left without text is packed and decoded again,
   at most `retries` rounds, with word times to put each word back at its own piece. A
   segment far too sparse for its length (`_is_sparse`: Whisper wrote a sentence for a
   window of five) counts as unread too; it stays only where the re-reads find nothing.

Why, from measurements on long-form real speech (bench/long_form.py, tiny.en int8, 2 CPU
cores): sequential decoding skips whole sentences (17 % WER on 10 minutes, against 5 % for
the utterances one by one), and the batched pipeline with its Silero VAD is worse (33 %):
Silero misses quiet talkers, and Whisper, which scales each window to its loudest part,
tends to skip a quiet talker next to a loud one. The per-piece gain fixes the latter (without
it WER was 1.5 to 2.6 times higher), the floor-relative detector the former. In a packed
window Whisper still stops early when it thinks the last sentence runs past the window,
which sequential decoding repairs by seeking; the re-read rounds do that in a batch. 25 s
windows leave room after the last sentence. Packing is also where long recordings lose words:
on an hour of real speech each utterance through this decoder alone gives 5.0 % WER (4.8 % for
sequential beam 5), packed 5.6 to 7.2 %, depending on which utterances share windows: a 20 s
cap moved single measurements a point either way (whole hour, two orders: 6.6 and 6.0 % at
25 s, 5.6 and 5.5 % at 20 s; in 300 s chunks 6.5 % at 25 s, 7.2 % at 20 s) at 25 % more
decoding time, so 25 s stays. More re-read rounds (4) made it worse: they read words into
pauses (insertions 74 -> 227). Keeping pauses up to
1 s keeps disfluent speech intact. Speed: few windows, greedy batched decoding, and two
shares decoded at once, which keeps both cores busy where sequential decoding uses about one.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from audiary.adapters.whisper.batching import WindowBatcher
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
from audiary.ports import DEFAULT_DECODE, DecodeOptions, Transcriber
from audiary.settings import Settings, load_settings

__all__ = ["WhisperTranscriber", "resolve_compute_type", "resolve_device"]

logger = logging.getLogger(__name__)

# A stream's first group of windows: up to 50 s of speech decoded before its first words.
STREAM_FIRST_WINDOWS = 2


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when CTranslate2 sees a GPU, else 'cpu'."""
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def cpu_threads_per_worker(cpu_threads: int, workers: int, device: str,
                           cores: int | None = None) -> int:
    """The threads each decode worker runs on: `cpu_threads` if set, else on CPU the cores
    shared out among the workers (one each on 2 cores with 2 workers). More threads than cores
    cost more in handing work between them than they gain: on 2 cores, with 2 workers, one
    thread each decoded 10 minutes of speech 5 to 10 % faster than CTranslate2's own default,
    and plain sequential faster-whisper ran 1.1 to 1.5 times faster on one thread than on two.
    0 on a GPU (CTranslate2 decides)."""
    if cpu_threads or device != "cpu":
        return cpu_threads
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def resolve_compute_type(compute_type: str, device: str) -> str:
    """'auto' becomes float16 on CUDA and int8 on CPU."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


@dataclass(frozen=True)
class _CallKey:
    """What the windows of one model call share."""

    language: str | None
    word_timestamps: bool
    options: DecodeOptions


class _Tokens(list[int]):
    """A segment's text tokens, with the log-probability the decoder gave each (or None)."""

    logprobs: list[float] | None = None


class _Decoder:
    """The CTranslate2 model as the batched pipeline calls it, with what that call leaves out.

    The pipeline passes the temperature but not `sampling_topk`, whose default (1) keeps the
    best token at any temperature, so a temperature above 0 samples from all tokens here, as
    Whisper does. When `logits` is set the call also returns each step's logits, from which
    `token_logprobs` reads the log-probability of each token decoded. One per pipeline, used by
    one thread at a time (the batcher's dispatcher for that pipeline)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.logits = False
        self.results: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, *args: Any, **kwargs: Any) -> list[Any]:
        if kwargs.get("sampling_temperature", 0.0) > 0.0:
            kwargs["sampling_topk"] = 0
        if self.logits:
            kwargs["return_logits_vocab"] = True
        self.results = list(self._model.generate(*args, **kwargs))
        return self.results


def token_logprobs(result: Any) -> list[float]:
    """Log-probability of each token of a generation result's first sequence, from the logits
    of each step (`return_logits_vocab`); suppressed tokens (-FLT_MAX) are out of the sum."""
    import ctranslate2

    logprobs = []
    for token, step in zip(result.sequences_ids[0], result.logits[0], strict=False):
        if step.device != "cpu":
            step = step.to_device(ctranslate2.Device.cpu)
        row = np.asarray(step, dtype=np.float64).reshape(-1)
        allowed = row[row > -1e30]
        top = allowed.max()
        logprobs.append(float(row[token] - top - math.log(np.exp(allowed - top).sum())))
    return logprobs


class _EncoderCache:
    """Encoder outputs of windows that language detection heard, kept for the model call that
    decodes the same window next, so that detecting costs no encoder pass of its own (on CPU
    the encoder pass is most of a window's cost). Keyed by the window's log-mel features, as
    the batched pipeline computes them; each output is taken once, and past `capacity` the
    oldest go. CPU only: the outputs are kept as NumPy arrays. Thread safe."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._items: OrderedDict[bytes, NDArray[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    @staticmethod
    def _key(features: NDArray[Any]) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest()

    def put(self, features: NDArray[Any], encoded: NDArray[Any]) -> None:
        """Keep `encoded`, the encoder output of one window's `features` ([n_mels, frames])."""
        key = self._key(features)
        with self._lock:
            self._items[key] = encoded
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def encode(self, encode: Callable[[NDArray[Any]], Any], features: NDArray[Any]) -> Any:
        """`encode(features)` for a batch of windows' features, with the outputs kept for any of
        them taken from here and only the others encoded."""
        if not self._items:  # the common case: nothing kept, nothing to look up
            return encode(features)
        rows = features if features.ndim == 3 else features[np.newaxis]
        keys = [self._key(row) for row in rows]
        with self._lock:
            found = [self._items.pop(key, None) for key in keys]
            self.hits += sum(out is not None for out in found)
        missing = [i for i, out in enumerate(found) if out is None]
        if len(missing) == len(rows):
            return encode(features)
        fresh = iter(np.asarray(encode(rows[missing])) if missing else [])
        outputs = [out if out is not None else next(fresh) for out in found]
        import ctranslate2

        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(outputs)))


class _ModelView:
    """The `WhisperModel` a pipeline sees: the shared model, with its own `_Decoder`, and
    encoder passes that take what language detection already encoded (`_EncoderCache`)."""

    def __init__(self, model: Any, encoded: _EncoderCache) -> None:
        self._shared = model
        self._encoded = encoded
        self.model = _Decoder(model.model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shared, name)

    def encode(self, features: NDArray[Any]) -> Any:
        return self._encoded.encode(self._shared.encode, features)


def _tail_keeping_pipeline(model: Any, encoded: _EncoderCache) -> Any:
    """A `BatchedInferencePipeline` whose windows keep text after their last timestamp, and
    that samples above temperature 0 and reads token log-probabilities when asked
    (`pipeline.model.model.logits = True`)."""
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.transcribe import get_compression_ratio

    class _Pipeline(BatchedInferencePipeline):  # type: ignore[misc]
        def forward(
            self, features: Any, tokenizer: Any, chunks_metadata: Any, options: Any
        ) -> list[list[dict[str, Any]]]:
            encoder_output, outputs = self.generate_segment_batched(features, tokenizer, options)
            decoder: _Decoder = self.model.model
            if decoder.logits:
                for output, result in zip(outputs, decoder.results, strict=True):
                    output["logprobs"] = token_logprobs(result)
            fps = self.model.frames_per_second
            segmented, sizes = [], []
            for meta, output in zip(chunks_metadata, outputs, strict=True):
                duration, offset = meta["duration"], meta["offset"]
                sizes.append(int(math.ceil(duration) * fps))
                kept = [
                    (t, lp)
                    for t, lp in zip(output["tokens"],
                                     output.get("logprobs") or itertools.repeat(None),
                                     strict=False)
                    if t < tokenizer.eot or t >= tokenizer.timestamp_begin
                ]
                tokens = [t for t, _ in kept]
                text_logprobs = iter(
                    [lp for t, lp in kept if t < tokenizer.timestamp_begin])
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
                            "tokens": _with_logprobs(text, text_logprobs, decoder.logits),
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

    return _Pipeline(_ModelView(model, encoded))


def _with_logprobs(text: list[int], logprobs: Iterator[float | None], wanted: bool) -> _Tokens:
    """`text` as `_Tokens`, taking one log-probability per token from `logprobs` if `wanted`."""
    tokens = _Tokens(text)
    if wanted:
        tokens.logprobs = [float(next(logprobs) or 0.0) for _ in text]
    return tokens


class WhisperTranscriber(Transcriber):
    """faster-whisper behind the `Transcriber` port; the model is loaded once, here.

    `workers` model replicas (CTranslate2 `num_workers`) decode at once, each fed by a
    dispatcher of the `WindowBatcher`: concurrent `transcribe` calls share model calls of up to
    `batch_size` windows (`batch_wait_ms` the longest a window waits for company), unless
    `batch_across_requests` is off. Thread safe.
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
        cache_dir: Path | None = None,
        batch_wait_ms: float = 20.0,
        batch_across_requests: bool = True,
        batch_merge_windows: bool = False,
    ) -> None:
        from faster_whisper import WhisperModel

        from audiary.adapters.model_store import PACKAGED, packaged

        self.device = resolve_device(device)
        self.compute_type = resolve_compute_type(compute_type, self.device)
        self.model_name = model_path
        if model_path in PACKAGED:  # a packaged name, not a hub one: nothing is downloaded
            model_path = str(packaged(model_path, cache_dir or load_settings().state_dir))
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
        self.cpu_threads = cpu_threads_per_worker(cpu_threads, workers, self.device)
        self._lock = threading.Lock()
        logger.info(
            "loading whisper model %s on %s (%s, %d cpu threads)",
            model_path,
            self.device,
            self.compute_type,
            self.cpu_threads,
        )
        self.model = WhisperModel(
            model_path,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            num_workers=workers,
        )
        self._encoded = _EncoderCache()
        self._pipelines = [_tail_keeping_pipeline(self.model, self._encoded)
                           for _ in range(workers)]
        self._batcher = WindowBatcher(
            self._model_call, workers=workers, max_windows=batch_size,
            max_wait_s=batch_wait_ms / 1000, across_requests=batch_across_requests,
            merge_s=max_window_s if batch_merge_windows else 0.0,
            mergeable=lambda key: isinstance(key, _CallKey) and not key.options.logprobs)

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
            cache_dir=settings.state_dir,
            batch_wait_ms=settings.batch_wait_ms,
            batch_across_requests=settings.batch_across_requests,
            batch_merge_windows=settings.batch_merge_windows,
        )

    @property
    def supported_languages(self) -> Sequence[str] | None:
        return list(self.model.supported_languages)

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def detect_language(self, samples: NDArray[Any]) -> tuple[str, float] | None:
        """The language of the first window of speech (English for an English-only model).

        The window holds speech only, as decoding sees it: a recording that starts with
        silence or music is not judged by that."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        return self._detect(samples, self.plan(samples) if self.multilingual else [])

    def _detect(self, samples: NDArray[Any], windows: Sequence[Window]) -> tuple[str, float]:
        """`detect_language` on samples already planned into `windows`."""
        if not self.multilingual:
            return "en", 1.0
        from faster_whisper.audio import pad_or_trim

        extractor = self.model.feature_extractor
        heard = render_windows(samples, windows[:1]) if windows else samples[:extractor.n_samples]
        # The features BatchedInferencePipeline.transcribe computes for this window, so that
        # the model call that decodes it finds its encoder output in `_encoded`.
        features = pad_or_trim(extractor(heard)[..., :-1])
        encoded = self.model.encode(features)
        (token, probability), *_ = self.model.model.detect_language(encoded)[0]
        if windows and self.device == "cpu":
            self._encoded.put(features, np.asarray(encoded)[0])
        return str(token)[2:-2], float(probability)

    def tokenize(self, text: str) -> list[int]:
        tokenizer = self.model.hf_tokenizer
        return [int(i) for i in tokenizer.encode(text, add_special_tokens=False).ids]

    def token_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        """Whisper's tokenizer is byte-level BPE (GPT-2's): each token's string spells bytes,
        one character per byte; special tokens are their own names."""
        tokenizer = self.model.hf_tokenizer
        decoder = _byte_decoder()
        result = []
        for token in tokens:
            piece = tokenizer.id_to_token(int(token)) or ""
            if all(char in decoder for char in piece):
                result.append(bytes(decoder[char] for char in piece))
            else:
                result.append(piece.encode("utf-8"))
        return result

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
        options: DecodeOptions = DEFAULT_DECODE,
    ) -> list[Segment]:
        """Segments of 16 kHz mono float32 `samples`, times relative to the first sample.

        Segments come sorted by start; `word_timestamps` (default: the instance's setting)
        adds word times; `options` are the task (translate: English text from any language),
        the prompt, the temperature and whether to keep token log-probabilities.
        """
        samples = self._checked(samples, language or self.language, options)
        return self._transcribe(samples, self.plan(samples), language=language or self.language,
                                word_timestamps=word_timestamps, options=options)

    def transcribe_stream(
        self,
        samples: NDArray[Any],
        *,
        language: str | None = None,
        word_timestamps: bool | None = None,
        options: DecodeOptions = DEFAULT_DECODE,
    ) -> Iterator[list[Segment]]:
        """`transcribe` a group of windows at a time, in order, each group (with its re-reads)
        yielded as soon as it is decoded: the first `STREAM_FIRST_WINDOWS` windows, so that the
        first words come early, then `batch_size` at a time. One language for all of it: the
        one asked for, else the one detected on the first window of speech."""
        samples = self._checked(samples, language or self.language, options)
        windows = self.plan(samples)
        if not windows:
            return
        language = language or self.language or self._detect(samples, windows)[0]
        first = min(STREAM_FIRST_WINDOWS, self.batch_size)
        bounds = [0, *range(first, len(windows), self.batch_size), len(windows)]
        for lo, hi in itertools.pairwise(bounds):
            yield self._transcribe(samples, windows[lo:hi], language=language,
                                   word_timestamps=word_timestamps, options=options)

    def decode_windows(self, samples: NDArray[Any], windows: Sequence[Window], *,
                       language: str) -> list[Segment]:
        """One decoding pass over planned `windows` of `samples` (no re-reads): what batching
        is measured on. All of them go to the batcher at once, so they share model calls of up
        to `batch_size` windows, spread over the idle workers."""
        samples = self._checked(samples, language, DEFAULT_DECODE)
        return self._decode(samples, windows,
                            _CallKey(language, self.word_timestamps, DEFAULT_DECODE), [])

    def _checked(self, samples: NDArray[Any], language: str | None,
                 options: DecodeOptions) -> NDArray[Any]:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            raise ValueError("the audio holds NaN or infinite samples: it is damaged")
        known = list(self.model.supported_languages)
        if language is not None and language not in known:
            raise ValueError(f"{self.model_name} does not know the language {language!r}; "
                             f"it knows {', '.join(known)}")
        if options.task == "translate" and not self.multilingual:
            raise ValueError(f"{self.model_name} is an English-only model: it cannot translate; "
                             "serve a multilingual model (AUDIARY_MODEL) to translate")
        return samples

    def _transcribe(self, samples: NDArray[Any], windows: Sequence[Window], *,
                    language: str | None, word_timestamps: bool | None,
                    options: DecodeOptions) -> list[Segment]:
        """Decode `windows` of `samples` and re-read what they left without text."""
        if not windows:
            return []
        words = self.word_timestamps if word_timestamps is None else word_timestamps
        if language is None:  # one language for every window, as a shared model call needs
            language = self._detect(samples, windows)[0]
        rounds = 0
        sparse: list[Segment] = []
        result = self._decode(samples, windows, _CallKey(language, words, options), sparse)
        pending, unread = windows, self._unread(samples, windows, result)
        while unread and rounds < self.retries:
            # Pieces from far apart share these windows; word times tell which piece each
            # word came from, so no text lands at another piece's time.
            pending = pack_windows(unread, self.max_window_s)
            again = split_at_pieces(
                self._decode(samples, pending, _CallKey(language, True, options), []),
                unread, keep_words=words
            )
            result += again
            unread = self._unread(samples, pending, again)
            rounds += 1
        # A sparse segment of the first pass stands where the re-reads found nothing better.
        result += [seg for seg in sparse if not _covered(seg, result)]
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
        self, samples: NDArray[Any], windows: Sequence[Window], key: _CallKey,
        sparse: list[Segment],
    ) -> list[Segment]:
        """Decode windows through the batcher (with other calls' windows, if any wait).

        Segments that are silence or loops are dropped, so their pieces are read again;
        sparse ones (`_is_sparse`) too, but kept in `sparse` in case nothing better comes."""
        rendered = render_windows(samples, windows)
        bounds = np.cumsum([0, *(w.length for w in windows)])
        decoded = self._batcher.decode(
            [rendered[lo:hi] for lo, hi in itertools.pairwise(bounds)], key)
        time_map = TimeMap(windows)
        duration = len(samples) / SAMPLE_RATE
        kept: list[Segment] = []
        for lo, segments in zip(bounds, decoded, strict=False):
            for seg in segments:
                if not seg.text.strip() or _is_silence(seg) or _is_loop(seg):
                    continue
                mapped = _to_segment(seg, time_map, duration, shift=lo / SAMPLE_RATE,
                                     words=key.word_timestamps)
                (sparse if _is_sparse(seg) else kept).append(mapped)
        return kept

    def _model_call(self, worker: int, audio: NDArray[Any], clips: list[dict[str, float]],
                    key: Hashable, words: bool) -> list[Any]:
        """One batched model call on worker `worker`'s pipeline (the batcher's dispatcher for
        that worker is its only caller); with word times if the key or the batcher (`words`,
        for windows of several requests in one) needs them."""
        assert isinstance(key, _CallKey)
        pipeline = self._pipelines[worker]
        pipeline.model.model.logits = key.options.logprobs
        segments, _ = pipeline.transcribe(
            audio,
            language=key.language,
            task=key.options.task,
            beam_size=self.beam_size,
            batch_size=len(clips),
            temperature=key.options.temperature,
            initial_prompt=key.options.prompt,
            without_timestamps=False,
            word_timestamps=key.word_timestamps or words,
            vad_filter=False,
            clip_timestamps=clips,
            hotwords=self.hotwords,
        )
        return list(segments)

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


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable bytes stand for themselves,
    the others for characters from 256 up (openai/gpt-2 encoder.py `bytes_to_unicode`)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


def _is_silence(segment: Any) -> bool:
    """Whisper's own rule for a window that holds no speech."""
    return bool(segment.no_speech_prob > 0.6 and segment.avg_logprob < -1.0)


def _is_loop(segment: Any) -> bool:
    """Whisper's rule for a failed decode: text that compresses too well repeats itself.

    Dropping it leaves its piece unread, so the next round decodes it again.
    """
    return bool(segment.compression_ratio > 2.4)


# A segment this long (in the decoded window, where pauses over 1 s are cut out) with fewer
# text tokens per second than this skipped most of what was said: on an hour of real speech,
# tiny.en once wrote 8 words for a 24 s window of five sentences.
SPARSE_MIN_S = 8.0
SPARSE_TOKENS_PER_S = 1.0


def _is_sparse(segment: Any) -> bool:
    """Whether a decoder segment holds far fewer tokens than its length of speech must."""
    duration = segment.end - segment.start
    return bool(segment.tokens is not None and duration >= SPARSE_MIN_S
                and len(segment.tokens) < SPARSE_TOKENS_PER_S * duration)


def _covered(segment: Segment, others: Sequence[Segment]) -> bool:
    """Whether other segments overlap at least half of `segment`'s time."""
    overlap = sum(max(0.0, min(o.end, segment.end) - max(o.start, segment.start))
                  for o in others)
    return overlap >= 0.5 * (segment.end - segment.start)


def _identity(t: float, *, is_end: bool = False) -> float:
    return t


def _to_segment(segment: Any, time_map: Callable[..., float], duration: float, *,
                shift: float = 0.0, words: bool = True) -> Segment:
    """A decoder segment as a transcript one: its times (`shift` seconds into the rendered
    windows) mapped back to the input's; its word times only if `words`."""
    def clamp(t: float) -> float:
        return round(min(max(t, 0.0), duration), 3)

    start = clamp(time_map(segment.start + shift))
    end = max(start, clamp(time_map(segment.end + shift, is_end=True)))
    timed = None
    if segment.words and words:
        timed = []
        for word in segment.words:
            word_start = clamp(time_map(word.start + shift))
            word_end = max(word_start, clamp(time_map(word.end + shift, is_end=True)))
            timed.append(
                Word(start=word_start, end=word_end, word=word.word, probability=word.probability)
            )
    tokens = segment.tokens
    return Segment(
        start=start,
        end=end,
        text=segment.text.strip(),
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        compression_ratio=(round(segment.compression_ratio, 3)
                           if segment.compression_ratio is not None else None),
        repetition=repeats_itself(segment.text),
        words=timed,
        tokens=list(tokens) if tokens is not None else None,
        token_logprobs=getattr(tokens, "logprobs", None),
        temperature=segment.temperature,
    )
