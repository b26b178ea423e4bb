"""A `Transcriber` that hears nothing and answers at once: the pipeline's orchestration
(fan-out, pushes, chunk records, fan-in, announcements) measured without inference
(`AUDIARY_ENGINE=null`, bench/control_plane.py). Never a production choice."""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from audiary.domain.transcript import Segment
from audiary.ports import DEFAULT_DECODE, DecodeOptions, Transcriber


class NullTranscriber(Transcriber):
    model_name = "null"

    def transcribe(self, samples: NDArray[Any], *, language: str | None = None,
                   word_timestamps: bool | None = None,
                   options: DecodeOptions = DEFAULT_DECODE) -> list[Segment]:
        return []
