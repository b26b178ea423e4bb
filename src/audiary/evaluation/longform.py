"""Long-form test audio built from the shared real-speech set (read at run time, never copied).

The speech folder is the setting `AUDIARY_SPEECH_DIR` (default `../shared/speech`, from the
checkout).
"""

from __future__ import annotations

import functools
import json
import logging
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray
from pydantic_settings import BaseSettings, SettingsConfigDict

from audiary.domain.audio import SAMPLE_RATE

__all__ = [
    "EvaluationSettings",
    "LongForm",
    "Utterance",
    "UtteranceSpan",
    "build_longform",
    "decode_audio",
    "full_set",
    "load_manifest",
    "speech_dir",
    "write_wav",
]

logger = logging.getLogger(__name__)

# Between utterances: silence of seeded random length, with faint noise so it is not digital zero.
SILENCE_RANGE_S = (0.3, 2.5)
NOISE_RMS = 3e-5  # about -90 dBFS: one 16-bit step, below the quietest recording's own floor


@dataclass(frozen=True)
class Utterance:
    """One manifest entry: an audio file and its reference transcript."""

    utt_id: str
    audio: Path
    text: str
    reference: str  # `text_normalized` where the manifest has it, else `text`
    duration_s: float
    corpus: str


@dataclass(frozen=True)
class UtteranceSpan:
    """Where one utterance sits in a long-form file."""

    utt_id: str
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class LongForm:
    """Concatenated utterances: 16 kHz mono float32 samples, reference text and boundaries."""

    samples: NDArray[Any]
    reference: str
    utterances: list[UtteranceSpan]
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


class EvaluationSettings(BaseSettings):
    """Where the evaluation data is; read from `AUDIARY_*` variables like every setting."""

    model_config = SettingsConfigDict(env_prefix="AUDIARY_", extra="ignore")

    speech_dir: Path = Path("../shared/speech")


def speech_dir() -> Path:
    """The real-speech folder holding manifest.jsonl (the setting `AUDIARY_SPEECH_DIR`)."""
    return EvaluationSettings().speech_dir


def load_manifest(path: Path | None = None) -> list[Utterance]:
    """Read a manifest.jsonl; audio paths are resolved relative to its folder."""
    manifest = path or speech_dir() / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"speech manifest {manifest} not found; set AUDIARY_SPEECH_DIR to the folder "
            "holding manifest.jsonl"
        )
    utterances = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        audio = manifest.parent / entry["audio"]
        utterances.append(
            Utterance(
                utt_id=str(entry.get("utt_id") or Path(entry["audio"]).stem).split(" (")[0],
                audio=audio,
                text=entry["text"],
                reference=entry.get("text_normalized") or entry["text"],
                duration_s=float(entry.get("duration_s", 0.0)),
                corpus=str(entry.get("corpus", "")),
            )
        )
    return utterances


def decode_audio(path: Path) -> NDArray[Any]:
    """Decode any audio file with PyAV to 16 kHz mono float32."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pieces: list[NDArray[Any]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    joined: NDArray[Any] = np.concatenate(pieces).astype(np.float32, copy=False)
    return joined


@functools.cache
def _cached_audio(path: Path) -> NDArray[Any]:
    samples = decode_audio(path)
    samples.setflags(write=False)
    return samples


def _concatenate(utterances: list[Utterance], rng: np.random.Generator,
                 next_index: Callable[[int], int | None]) -> LongForm:
    """Utterances with seeded noisy silences around each; `next_index(samples so far)` picks
    the next one, None ends the file."""

    def silence() -> NDArray[Any]:
        seconds = rng.uniform(*SILENCE_RANGE_S)
        n = int(seconds * SAMPLE_RATE)
        return (rng.standard_normal(n) * NOISE_RMS).astype(np.float32)

    pieces = [silence()]
    position = len(pieces[0])
    spans: list[UtteranceSpan] = []
    while (index := next_index(position)) is not None:
        utt = utterances[index]
        audio = _cached_audio(utt.audio)
        spans.append(
            UtteranceSpan(
                utt_id=utt.utt_id,
                start_s=position / SAMPLE_RATE,
                end_s=(position + len(audio)) / SAMPLE_RATE,
                text=utt.reference,
            )
        )
        gap = silence()
        pieces += [audio, gap]
        position += len(audio) + len(gap)
    logger.info(
        "built %.1f s long-form audio from %d utterances", position / SAMPLE_RATE, len(spans)
    )
    return LongForm(samples=np.concatenate(pieces), reference=" ".join(s.text for s in spans),
                    utterances=spans)


def build_longform(min_duration_s: float, seed: int = 0, manifest: Path | None = None) -> LongForm:
    """Concatenate utterances with varied silences until at least `min_duration_s` long.

    Each pass over the set uses a fresh seeded order, and the file starts and ends in silence.
    """
    utterances = load_manifest(manifest)
    if not utterances:
        raise ValueError("the speech manifest lists no utterances")
    rng = np.random.default_rng(seed)
    queue: list[int] = []

    def next_index(position: int) -> int | None:
        if position >= min_duration_s * SAMPLE_RATE:
            return None
        if not queue:
            queue.extend(int(i) for i in rng.permutation(len(utterances)))
        return queue.pop(0)

    return _concatenate(utterances, rng, next_index)


def full_set(seed: int = 0) -> LongForm:
    """Every utterance of the speech set (manifest.jsonl and long/manifest.jsonl) exactly once,
    in a seeded order with seeded silences: about 5 minutes and 670 reference words."""
    folder = speech_dir()
    utterances = [*load_manifest(folder / "manifest.jsonl"),
                  *load_manifest(folder / "long" / "manifest.jsonl")]
    rng = np.random.default_rng(seed)
    queue: list[int] | None = None

    def next_index(position: int) -> int | None:
        nonlocal queue
        if queue is None:  # drawn after the first silence, like build_longform's first pass
            queue = [int(i) for i in rng.permutation(len(utterances))]
        return queue.pop(0) if queue else None

    return _concatenate(utterances, rng, next_index)


def write_wav(path: Path, samples: NDArray[Any], sample_rate: int = SAMPLE_RATE) -> Path:
    """Write float samples in [-1, 1] as 16-bit PCM mono WAV."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return path
