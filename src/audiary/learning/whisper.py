"""Whisper between CTranslate2 and Hugging Face `transformers`, without a download.

The packaged models are CTranslate2 directories (`model.bin`, float16). Their weights map back
onto the `transformers` Whisper layout one to one, except that CTranslate2 fuses attention
projections (query, key and value of self-attention into one matrix; key and value of the
cross-attention into another); those split back along the output dimension. Key projections
have no bias in Whisper: their slice of the fused bias is zeros. The decoder's output
projection is tied to the token embeddings in both.

`to_transformers` rebuilds the float model and its processor; `to_ctranslate2` converts a
fine-tuned one back with CTranslate2's own converter, keeping the base model's decoding config
(alignment heads, suppressed tokens, language ids).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from audiary.adapters.whisper.ct2 import read_ct2
from audiary.errors import ConfigError

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

__all__ = ["read_ct2", "to_ctranslate2", "to_transformers"]



def _config(weights: dict[str, NDArray[Any]], model_dir: Path) -> Any:
    from transformers import WhisperConfig

    vocab, d_model = weights["decoder/embeddings/weight"].shape
    base = json.loads((model_dir / "config.json").read_text())
    tokens = json.loads((model_dir / "tokenizer.json").read_text())
    special = {t["content"]: t["id"] for t in tokens["added_tokens"]}

    def layers(side: str) -> int:
        return len({k.split("/")[1] for k in weights
                    if re.match(rf"{side}/layer_\d+/", k)})

    return WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(weights["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=layers("encoder"), decoder_layers=layers("decoder"),
        encoder_attention_heads=int(weights["encoder/num_heads"]),
        decoder_attention_heads=int(weights["decoder/num_heads"]),
        encoder_ffn_dim=int(weights["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(weights["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(weights["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(weights["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=special["<|endoftext|>"], bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|endoftext|>"],
        decoder_start_token_id=special["<|startoftranscript|>"],
        suppress_tokens=base.get("suppress_ids", []),
        begin_suppress_tokens=base.get("suppress_ids_begin", []),
        scale_embedding=False, tie_word_embeddings=True)


def _state_dict(weights: dict[str, NDArray[Any]], config: Any) -> dict[str, Any]:
    import torch

    d = config.d_model

    def t(name: str) -> Any:
        return torch.from_numpy(weights[name].astype(np.float32))

    state: dict[str, Any] = {}

    def linear(dst: str, src: str, *, bias: bool = True) -> None:
        state[f"{dst}.weight"] = t(f"{src}/weight")
        if bias:
            state[f"{dst}.bias"] = t(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"] = t(f"{src}/gamma")
        state[f"{dst}.bias"] = t(f"{src}/beta")

    def split(dsts: list[str], src: str) -> None:
        weight, bias = t(f"{src}/weight"), t(f"{src}/bias")
        for i, dst in enumerate(dsts):
            state[f"{dst}.weight"] = weight[i * d:(i + 1) * d].clone()
            if not dst.endswith("k_proj"):  # Whisper's keys have no bias (zeros when fused)
                state[f"{dst}.bias"] = bias[i * d:(i + 1) * d].clone()

    for side in ("encoder", "decoder"):
        root = f"model.{side}"
        state[f"{root}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
        norm(f"{root}.layer_norm", f"{side}/layer_norm")
        n = config.encoder_layers if side == "encoder" else config.decoder_layers
        for i in range(n):
            dst, src = f"{root}.layers.{i}", f"{side}/layer_{i}"
            attn = f"{dst}.self_attn"
            split([f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"],
                  f"{src}/self_attention/linear_0")
            linear(f"{attn}.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                cross = f"{dst}.encoder_attn"
                linear(f"{cross}.q_proj", f"{src}/attention/linear_0")
                split([f"{cross}.k_proj", f"{cross}.v_proj"], f"{src}/attention/linear_1")
                linear(f"{cross}.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    state["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def to_transformers(model_dir: Path | str
                    ) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """The float32 `transformers` Whisper and its processor rebuilt from a CTranslate2
    Whisper directory (model.bin, config.json, tokenizer.json)."""
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    model_dir = Path(model_dir)
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (model_dir / name).is_file():
            raise ConfigError(f"{model_dir} is not a CTranslate2 Whisper directory: no {name}")
    weights = read_ct2(model_dir / "model.bin")
    config = _config(weights, model_dir)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(_state_dict(weights, config), strict=False)
    if unexpected or [m for m in missing if m != "proj_out.weight"]:
        raise ConfigError(f"{model_dir}: weights do not fit Whisper "
                          f"(missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.generation_config.forced_decoder_ids = None
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=config.num_mel_bins),
        tokenizer=tokenizer)
    return model.eval(), processor


def to_ctranslate2(model: WhisperForConditionalGeneration, processor: WhisperProcessor,
                   base_dir: Path | str, out_dir: Path | str, *,
                   quantization: str = "float16") -> Path:
    """Convert `model` with CTranslate2's converter into `out_dir`, with the base model's
    config.json (decoding settings) and tokenizer files, so faster-whisper loads it as it
    loads the base."""
    from ctranslate2.converters import TransformersConverter
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="audiary-hf-") as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        TransformersConverter(tmp).convert(str(out_dir), quantization=quantization,
                                           force=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json",
                 "preprocessor_config.json"):
        if (base_dir / name).is_file():
            shutil.copy(base_dir / name, out_dir / name)
    return out_dir
