"""Word error rate with Whisper-style English normalisation on both sides."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jiwer

__all__ = ["WerResult", "normalize", "wer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WerResult:
    """Corpus WER: total errors over total reference words."""

    wer: float
    errors: int
    words: int
    substitutions: int
    deletions: int
    insertions: int
    hits: int = 0


@functools.cache
def _normalizer() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    normalizer: Callable[[str], str] = EnglishTextNormalizer()
    return normalizer


def normalize(text: str) -> str:
    """Lowercase, drop punctuation and fillers, unify spellings and numbers (Whisper's rules)."""
    return " ".join(_normalizer()(text).split())


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> WerResult:
    """Corpus WER over aligned pairs, both sides normalised with `normalize`.

    Pairs whose reference normalises to nothing count every hypothesis word as an insertion;
    with no reference words at all the rate is 0 without errors and infinite with some.
    """
    if len(references) != len(hypotheses):
        raise ValueError(
            f"got {len(references)} references but {len(hypotheses)} hypotheses; pass one "
            "hypothesis per reference"
        )
    refs: list[str] = []
    hyps: list[str] = []
    extra_insertions = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = normalize(reference), normalize(hypothesis)
        if ref:
            refs.append(ref)
            hyps.append(hyp)
        else:
            extra_insertions += len(hyp.split())
    substitutions = deletions = insertions = hits = 0
    if refs:
        out = jiwer.process_words(refs, hyps)
        substitutions, deletions = out.substitutions, out.deletions
        insertions, hits = out.insertions, out.hits
    insertions += extra_insertions
    words = substitutions + deletions + hits
    errors = substitutions + deletions + insertions
    rate = errors / words if words else (0.0 if errors == 0 else float("inf"))
    return WerResult(
        wer=rate,
        errors=errors,
        words=words,
        substitutions=substitutions,
        deletions=deletions,
        insertions=insertions,
        hits=hits,
    )
