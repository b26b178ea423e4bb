"""Test media made on the fly with PyAV: the same speech in every container the pipeline
accepts, and the broken files it must reject."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO_SAMPLE = REPO / "samples" / "diary-demo.ogg"

# suffix -> (container format, audio codec, sample rate, whether to add a video track)
FORMATS: dict[str, tuple[str, str, int, bool]] = {
    "wav": ("wav", "pcm_s16le", 44100, False),
    "flac": ("flac", "flac", 44100, False),
    "mp3": ("mp3", "libmp3lame", 44100, False),
    "m4a": ("ipod", "aac", 44100, False),
    "opus": ("ogg", "libopus", 48000, False),
    "webm": ("webm", "libopus", 48000, False),
    "mp4": ("mp4", "aac", 44100, True),
}


def decode(path: Path, rate: int = 16000, seconds: float | None = None) -> np.ndarray:
    """Mono float32 samples of any file PyAV reads."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for f in resampler.resample(frame):
                out.append(f.to_ndarray().reshape(-1))
        for f in resampler.resample(None):
            out.append(f.to_ndarray().reshape(-1))
    samples = np.concatenate(out)
    return samples[: int(seconds * rate)] if seconds else samples


def encode(samples: np.ndarray, path: Path, *, rate: int = 16000, stereo: bool = True) -> Path:
    """Write float32 mono `samples` (at `rate`) in the format named by `path`'s suffix."""
    fmt, codec, out_rate, video = FORMATS[path.suffix.lstrip(".")]
    layout = "stereo" if stereo else "mono"
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=out_rate, layout=layout)
        vstream = None
        if video:
            vstream = container.add_stream("mpeg4", rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=out_rate)
        data = samples.astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(data, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(f))
        container.mux(stream.encode(None))
        if vstream is not None:
            for i in range(int(len(samples) / rate * 10)):
                img = np.full((48, 64, 3), (i * 7) % 255, np.uint8)
                vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
                vf.pts = i
                container.mux(vstream.encode(vf))
            container.mux(vstream.encode(None))
    return path


def video_without_audio(path: Path, seconds: int = 2) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        vstream = container.add_stream("mpeg4", rate=10)
        vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        for i in range(seconds * 10):
            vf = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            vf = vf.reformat(format="yuv420p")
            vf.pts = i
            container.mux(vstream.encode(vf))
        container.mux(vstream.encode(None))
    return path


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files the pipeline must reject, with the error code each should get."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.wav"
    text.write_text("This is a text file that someone renamed to .wav\n" * 20)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    whole = encode(decode(DEMO_SAMPLE, seconds=6.0), folder / "whole.wav", stereo=False)
    truncated = folder / "truncated.wav"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    silent = encode(np.zeros(16000 * 3, np.float32), folder / "silent.flac", stereo=False)
    return {
        "text renamed .wav": (text, "not_audio"),
        "zero bytes": (empty, "empty_file"),
        "truncated wav": (truncated, "truncated_audio"),
        "silence": (silent, "silent_audio"),
        "video without audio": (video_without_audio(folder / "mute.mp4"), "no_audio_stream"),
    }
