"""Canary: the faster-whisper internals the windowed decoder relies on are the ones it was
written against (faster-whisper 1.2.1, pinned in pyproject.toml).

`audiary.adapters.whisper.engine._tail_keeping_pipeline` overrides
`BatchedInferencePipeline.forward` with a copy that keeps text after a window's last timestamp,
and calls `generate_segment_batched`, `WhisperModel.add_word_timestamps` and
`faster_whisper.transcribe.get_compression_ratio`; language detection computes a window's
features as `BatchedInferencePipeline.transcribe` does (`feature_extractor`, `pad_or_trim`), so
that the pipeline's encoder pass finds them (a change there only loses that saving; the
integration test `test_language.py` counts it). When faster-whisper changes any of them the
copy may silently decode differently; these checks fail first, with what to do.
"""

from __future__ import annotations

import hashlib
import inspect

import faster_whisper
import numpy as np
import pytest
from faster_whisper import BatchedInferencePipeline, WhisperModel

PINNED = "1.2.1"
UPGRADE = (
    "compare the change with audiary/adapters/whisper/engine.py (_tail_keeping_pipeline), "
    "adapt the copy, then update the pin in pyproject.toml and the digests in this test"
)
# sha256 of the method sources in faster-whisper 1.2.1 (first 16 hex digits).
SOURCES = {
    "BatchedInferencePipeline.forward": (BatchedInferencePipeline.forward, "2d9556859b97b306"),
    "BatchedInferencePipeline.generate_segment_batched": (
        BatchedInferencePipeline.generate_segment_batched, "a18884c7b281eea5"),
    "WhisperModel.add_word_timestamps": (WhisperModel.add_word_timestamps, "74046c2810f714e0"),
}
# Parameters the adapter passes by name.
CALLED = {
    "BatchedInferencePipeline.transcribe": (
        BatchedInferencePipeline.transcribe,
        {"audio", "language", "beam_size", "batch_size", "without_timestamps",
         "word_timestamps", "vad_filter", "clip_timestamps"}),
    "WhisperModel.transcribe": (
        WhisperModel.transcribe, {"audio", "language", "beam_size", "word_timestamps",
                                  "vad_filter"}),
    "WhisperModel.__init__": (
        WhisperModel.__init__, {"device", "compute_type", "cpu_threads", "num_workers"}),
}


def test_the_installed_faster_whisper_is_the_pinned_one():
    assert faster_whisper.__version__ == PINNED, (
        f"faster-whisper {faster_whisper.__version__} is installed, the decoder is written "
        f"for {PINNED}: {UPGRADE}")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_internals_the_decoder_copies_are_unchanged(name: str):
    method, digest = SOURCES[name]
    found = hashlib.sha256(inspect.getsource(method).encode()).hexdigest()[:16]
    assert found == digest, f"faster-whisper's {name} changed (source {found}): {UPGRADE}"


@pytest.mark.parametrize("name", sorted(CALLED))
def test_the_parameters_the_adapter_passes_exist(name: str):
    method, wanted = CALLED[name]
    missing = wanted - set(inspect.signature(method).parameters)
    assert not missing, f"faster-whisper's {name} lost {sorted(missing)}: {UPGRADE}"


def test_the_helpers_the_copy_imports_exist():
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.transcribe import get_compression_ratio

    assert pad_or_trim(np.ones((80, 10), dtype=np.float32)).shape == (80, 3000)
    assert get_compression_ratio("ab" * 50) > get_compression_ratio("a quick brown fox")
