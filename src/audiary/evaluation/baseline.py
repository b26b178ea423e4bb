"""Plain faster-whisper as the quality baseline, made repeatable.

faster-whisper's temperature fallback samples (a 30 s window that fails its compression-ratio or
log-probability check is decoded again at temperature 0.2, 0.4, ...). CTranslate2 draws those
samples from a generator of the worker thread that runs the model, seeded from
`ctranslate2.set_random_seed` when that thread first samples; later seeding does not reset it,
and with several workers which thread takes a request varies. So a baseline is repeatable when
it runs on its own model with one worker, made after seeding, and is asked in a fixed order:
that is what `baseline_transcriber` gives. Greedy and batched decoding (the pipeline's own
windows) never sample.
"""

from __future__ import annotations

from audiary.adapters.whisper.engine import WhisperTranscriber

__all__ = ["BASELINE_SEED", "baseline_transcriber"]

BASELINE_SEED = 0


def baseline_transcriber(
    model_path: str, *, compute_type: str = "auto", cpu_threads: int = 0
) -> WhisperTranscriber:
    """A transcriber for `transcribe_sequential` only, whose sampling repeats run after run."""
    import ctranslate2

    ctranslate2.set_random_seed(BASELINE_SEED)
    return WhisperTranscriber(model_path, device="cpu", compute_type=compute_type,
                              cpu_threads=cpu_threads, workers=1)
