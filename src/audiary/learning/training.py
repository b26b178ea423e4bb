"""Fine-tuning Whisper on corrected clips: Hugging Face `Seq2SeqTrainer`, gradient
accumulation, mixed precision when a GPU is there (the original design's recipe).

Each example is a clip (16 kHz float32) and its corrected text. The decoder learns the text
after the prompt Whisper itself decodes with (start of transcript, language and task on a
multilingual model, no timestamps), ending in end-of-text, so the fine-tuned model is decoded
exactly as the base was.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from audiary.domain.audio import SAMPLE_RATE

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

__all__ = ["Example", "TrainConfig", "TrainReport", "fine_tune", "label_ids"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    samples: NDArray[np.float32]
    text: str
    language: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200  # optimizer steps
    batch_size: int = 8
    grad_accum: int = 2  # examples per optimizer step: batch_size * grad_accum
    learning_rate: float = 1e-5
    warmup_steps: int = 20
    seed: int = 0


@dataclass
class TrainReport:
    steps: int
    examples: int
    audio_s: float
    seconds: float
    device: str
    mixed_precision: bool
    losses: list[float] = field(default_factory=list)

    @property
    def seconds_per_audio_hour(self) -> float:
        """Training time per hour of audio seen (each pass over a clip counts)."""
        return self.seconds / (self.audio_s / 3600) if self.audio_s else math.inf


def label_ids(processor: WhisperProcessor, text: str, language: str | None) -> list[int]:
    """Decoder targets for `text`: the prompt after start-of-transcript, the text's tokens
    (with Whisper's leading space), end-of-text."""
    tokenizer = processor.tokenizer
    special = tokenizer.convert_tokens_to_ids
    prompt: list[int] = []
    lang = special(f"<|{language or 'en'}|>")
    if isinstance(lang, int) and lang != tokenizer.unk_token_id and \
            special("<|transcribe|>") is not None and _multilingual(processor):
        prompt = [lang, special("<|transcribe|>")]
    prompt.append(special("<|notimestamps|>"))
    words = tokenizer.encode(" " + text.strip(), add_special_tokens=False)
    return [*prompt, *words, special("<|endoftext|>")]


def _multilingual(processor: WhisperProcessor) -> bool:
    # English-only vocabularies have 51864 entries, multilingual ones 51865 or more.
    return len(processor.tokenizer) >= 51865


class _Clips:
    """A map-style dataset of (features, labels), computed when a batch asks."""

    def __init__(self, examples: Sequence[Example], processor: WhisperProcessor) -> None:
        self.examples = examples
        self.processor = processor

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        example = self.examples[i]
        features = self.processor.feature_extractor(
            example.samples, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        return {"input_features": features,
                "labels": label_ids(self.processor, example.text, example.language)}


def _collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    longest = max(len(b["labels"]) for b in batch)
    labels = torch.full((len(batch), longest), -100, dtype=torch.long)  # -100: not scored
    for row, b in enumerate(batch):
        labels[row, :len(b["labels"])] = torch.tensor(b["labels"])
    features = torch.tensor(np.stack([b["input_features"] for b in batch]))
    return {"input_features": features, "labels": labels}


def fine_tune(model: WhisperForConditionalGeneration, processor: WhisperProcessor,
              examples: Sequence[Example], config: TrainConfig, work_dir: Path, *,
              progress: Callable[[int, int, float], None] | None = None) -> TrainReport:
    """Train `model` in place for `config.steps` optimizer steps; `progress(step, steps,
    loss)` after each."""
    import torch
    from transformers import (
        PrinterCallback,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress is ours (`progress`), not tqdm's

    if not examples:
        raise ValueError("no training examples")
    set_seed(config.seed)
    cuda = torch.cuda.is_available()
    report = TrainReport(steps=config.steps, examples=len(examples), audio_s=0.0, seconds=0.0,
                         device="cuda" if cuda else "cpu", mixed_precision=cuda)

    class Progress(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                report.losses.append(float(logs["loss"]))
                if progress is not None:
                    progress(state.global_step, config.steps, float(logs["loss"]))

    args = Seq2SeqTrainingArguments(
        output_dir=str(work_dir), max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps, fp16=cuda, logging_steps=1, save_strategy="no",
        report_to=[], seed=config.seed, data_seed=config.seed, dataloader_num_workers=0,
        disable_tqdm=True, remove_unused_columns=False, use_cpu=not cuda,
        log_level="warning")
    model.config.use_cache = False
    model.train()
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=_Clips(examples, processor),
                             data_collator=_collate, callbacks=[Progress()])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict
    started = time.monotonic()
    trainer.train()
    report.seconds = time.monotonic() - started
    seen = config.steps * config.batch_size * config.grad_accum
    mean_s = float(np.mean([len(e.samples) for e in examples])) / SAMPLE_RATE
    report.audio_s = seen * mean_s
    model.config.use_cache = True
    model.eval()
    log.info("trained %d steps on %d clips in %.1f s (loss %.3f -> %.3f)", config.steps,
             len(examples), report.seconds, report.losses[0] if report.losses else math.nan,
             report.losses[-1] if report.losses else math.nan)
    return report
