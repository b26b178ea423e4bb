"""Decoding and validation with PyAV: any input format in, canonical 16 kHz mono PCM WAV out.

Validation is by content, never by file name: what PyAV cannot open, what has no audio
stream, what is shorter than its own header says, silent, too short or too long is
rejected with a `RejectedInputError` whose code is stable and whose message a user understands.
"""

from __future__ import annotations

import logging
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from audiary.domain.audio import BYTES_PER_SAMPLE, SAMPLE_RATE, frame_db
from audiary.domain.chunking import FRAME
from audiary.errors import RejectedInputError

log = logging.getLogger(__name__)

_TRUNCATION_TOLERANCE = 0.9  # decoded/declared below this means the file was cut short


@dataclass(frozen=True)
class AudioLimits:
    max_duration_s: float
    min_duration_s: float
    silence_dbfs: float


@dataclass(frozen=True)
class CanonicalAudio:
    """What decoding produced: a canonical WAV on disk and its 10 ms level envelope."""

    path: Path
    samples: int
    levels_db: NDArray[Any]
    peak_dbfs: float
    source_format: str
    source_codec: str

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE


def _declared_wav_seconds(path: Path) -> float | None:
    """Duration a RIFF/WAVE header declares, or None if the file is not a plain WAV.

    FFmpeg derives a WAV's duration from the file size, so a truncated WAV looks complete
    to PyAV; the header's data-chunk size is what tells.
    """
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        byte_rate = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            ident, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if ident == b"fmt ":
                fmt = fh.read(size)
                if len(fmt) >= 12:
                    byte_rate = struct.unpack("<I", fmt[8:12])[0]
                fh.seek(size % 2, 1)
            elif ident == b"data":
                # 0xFFFFFFFF marks a streamed WAV of unknown length: nothing is declared.
                if byte_rate == 0 or size == 0xFFFFFFFF:
                    return None
                return float(size / byte_rate)
            else:
                fh.seek(size + size % 2, 1)


def decode_to_canonical(source: Path, dest: Path, limits: AudioLimits) -> CanonicalAudio:
    """Decode `source` to 16 kHz mono s16 WAV at `dest`, validating as it goes."""
    try:
        container = av.open(str(source))
    except av.error.FFmpegError as exc:
        raise RejectedInputError(
            "not_audio",
            "The file is not a recognisable audio or video file (it could not be opened as "
            "any known format). Upload a WAV, FLAC, MP3, M4A/AAC, OGG/Opus or WebM file.",
        ) from exc
    with container:
        if not container.streams.audio:
            raise RejectedInputError(
                "no_audio_stream",
                f"The file is a {container.format.name} container without any audio track.",
            )
        stream = container.streams.audio[0]
        declared = _declared_wav_seconds(source)
        if declared is None and container.duration:
            declared = container.duration / av.time_base
        if declared is not None and declared > limits.max_duration_s:
            raise _too_long(declared, limits)

        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        levels: list[NDArray[Any]] = []
        carry: NDArray[np.int16] = np.zeros(0, dtype=np.int16)
        peak = 0
        samples = 0
        with wave.open(str(dest), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(BYTES_PER_SAMPLE)
            out.setframerate(SAMPLE_RATE)
            try:
                for frame in _resampled(container.decode(stream), resampler):
                    pcm = frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                    out.writeframes(pcm.tobytes())
                    samples += len(pcm)
                    if len(pcm):
                        peak = max(peak, int(np.abs(pcm.astype(np.int32)).max()))
                    carry = np.concatenate([carry, pcm])
                    whole = len(carry) // FRAME * FRAME
                    levels.append(frame_db(carry[:whole], FRAME))
                    carry = carry[whole:]
                    if samples / SAMPLE_RATE > limits.max_duration_s:
                        raise _too_long(samples / SAMPLE_RATE, limits)
            except av.error.FFmpegError as exc:
                raise RejectedInputError(
                    "corrupt_audio",
                    f"The audio could not be decoded after {samples / SAMPLE_RATE:.1f} s: "
                    f"the file is damaged ({exc.strerror or exc}).",
                ) from exc
        duration = samples / SAMPLE_RATE
        if declared and duration < declared * _TRUNCATION_TOLERANCE:
            raise RejectedInputError(
                "truncated_audio",
                f"The file is cut short: its header promises {declared:.1f} s of audio but only "
                f"{duration:.1f} s is there. Upload the complete file.",
            )
        if duration < limits.min_duration_s:
            raise RejectedInputError(
                "too_short",
                f"The audio lasts {duration:.2f} s; "
                f"at least {limits.min_duration_s:g} s is needed.",
            )
        peak_dbfs = 20 * np.log10(max(peak, 1) / 32768.0)
        if peak_dbfs < limits.silence_dbfs:
            raise RejectedInputError(
                "silent_audio",
                f"The audio is silent (loudest point {peak_dbfs:.0f} dBFS, below "
                f"{limits.silence_dbfs:g} dBFS): there is nothing to transcribe.",
            )
        return CanonicalAudio(
            path=dest,
            samples=samples,
            levels_db=np.concatenate(levels) if levels else np.zeros(0, np.float32),
            peak_dbfs=float(peak_dbfs),
            source_format=container.format.name,
            source_codec=stream.codec_context.name,
        )


def _resampled(
    frames: Iterator[av.AudioFrame], resampler: av.AudioResampler
) -> Iterator[av.AudioFrame]:
    """Every decoded frame through the resampler, then what the resampler still holds."""
    for frame in frames:
        yield from resampler.resample(frame)
    yield from resampler.resample(None)


def _too_long(seconds: float, limits: AudioLimits) -> RejectedInputError:
    return RejectedInputError(
        "too_long",
        f"The audio lasts {seconds / 60:.1f} min; the limit is {limits.max_duration_s / 60:g} min. "
        "Split the recording and upload the parts.",
    )
