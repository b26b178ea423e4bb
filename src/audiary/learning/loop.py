"""One turn of the learning loop (`audiary train`): candidates from a dataset, evaluated on its
test split against the promoted model, promoted only when WER improves by the margin.

Two candidates, cheap first:
- vocabulary: the promoted model with hotwords, the terms the corrections keep fixing
  (domain.models.correction_terms over the train split);
- fine-tuned: the promoted model's weights rebuilt as a `transformers` Whisper
  (learning.whisper), trained on the train split (learning.training), converted back to
  CTranslate2 and copied into the models bucket.

Each is registered as a candidate only once it exists whole, then scored on the test split
(the promoted model is scored there too, once per dataset version) and passed to the gate.
A run that fails midway registers nothing and leaves the promoted model as it was. When the
registry is empty, the model served today is registered and promoted first, as the baseline.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audiary.adapters.model_store import PACKAGED, materialize, package_names, packaged
from audiary.domain.audio import WAV_HEADER_BYTES, pcm_to_float
from audiary.domain.datasets import DatasetRecord, Split
from audiary.domain.models import (
    Decision,
    ModelEvaluation,
    ModelOrigin,
    ModelRecord,
    OriginKind,
    correction_terms,
    gate,
)
from audiary.errors import ConfigError, NotFoundError
from audiary.evaluation.datasets import evaluate, guard_wer, rows_of
from audiary.learning.training import Example, TrainConfig, TrainReport
from audiary.ports import Stores
from audiary.services import models
from audiary.wiring import transcriber

__all__ = ["Outcome", "base_directory", "baseline", "dataset_for", "examples", "judge", "run",
           "score"]

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    candidate: ModelRecord
    decision: Decision
    report: TrainReport | None = None


def dataset_for(svc: Stores, version: int | None, *, force: bool = False) -> DatasetRecord:
    """The dataset to learn from (default: the newest); refused below the ready threshold
    unless `force`."""
    built = {r.version: r for r in svc.notes.list_datasets()}
    if not built:
        raise NotFoundError("no dataset yet: run `audiary dataset build` first")
    version = version or max(built)
    if version not in built:
        raise NotFoundError(f"no dataset v{version} (built: "
                            f"{', '.join(f'v{v}' for v in sorted(built))})")
    record = built[version]
    train = record.hours[Split.TRAIN]
    if not record.ready and not force:
        raise ConfigError(
            f"dataset v{version} has {train:.2f} h of train audio, below the "
            f"{record.ready_hours:g} h of AUDIARY_DATASET_READY_HOURS; collect more "
            "corrections, or pass --force to train on it anyway")
    if record.rows[Split.TEST] == 0:
        raise ConfigError(f"dataset v{version} has no test clips, so no candidate can be "
                          "judged; it needs more recordings (speakers) or a larger test share"
                          " (AUDIARY_DATASET_SPLITS)")
    return record


def baseline(svc: Stores) -> ModelRecord:
    """The promoted model; with an empty registry, the model served today, registered and
    promoted."""
    current = models.promoted(svc)
    if current is not None:
        return current
    s = svc.settings
    location = models.serving_model(svc).location
    if location in PACKAGED:  # the default, AUDIARY_MODEL
        record = models.register_directory(
            svc, packaged(location, s.state_dir), name=location,
            origin=models.packaged_origin(package_names(location)))
    elif Path(location).is_dir():
        record = models.register_directory(
            svc, Path(location), name=Path(location).name.lower(),
            origin=ModelOrigin(kind=OriginKind.LOCAL, source=location))
    else:  # a hub name, or a bucket prefix
        record = models.register_reference(
            svc, location, name=location.rstrip("/").rsplit("/", 1)[-1].lower(),
            origin=ModelOrigin(kind=OriginKind.HUB if "://" not in location
                               else OriginKind.LOCAL, source=location))
    return models.promote(svc, record.model_id,
                          reason="baseline: the model served before the registry had one")


def score(svc: Stores, record: ModelRecord, dataset: DatasetRecord, *,
          splits: Sequence[Split] = (Split.TEST,),
          progress: Callable[[int, int], None] | None = None) -> ModelRecord:
    """The model's WER on the dataset's splits, stored as an evaluation and on its record;
    a model already scored there is not scored again."""
    if all(record.wer_on(dataset.version, split.value) is not None for split in splits):
        return record
    engine = transcriber(svc.settings, models.serving_of(record), svc=svc)
    evaluation = evaluate(svc, engine, dataset.version, splits=splits, progress=progress)
    return models.add_evaluation(svc, record, evaluation)


# The guard set's WER is kept on a record as an evaluation of "dataset 0", split "guard".
GUARD, GUARD_SPLIT = 0, "guard"


def guarded(svc: Stores, record: ModelRecord) -> ModelRecord:
    """The record with its WER on the guard set (AUDIARY_PROMOTE_GUARD), measured once per
    guard file."""
    manifest = svc.settings.promote_guard
    assert manifest is not None
    stamp = f"guard-{manifest.name}-{manifest.stat().st_mtime_ns if manifest.exists() else 0}"
    if any(e.evaluation_id == stamp for e in record.evaluations):
        return record
    engine = transcriber(svc.settings, models.serving_of(record), svc=svc)
    summary = guard_wer(engine, manifest)
    return models.record_evaluation(svc, record, ModelEvaluation(
        evaluation_id=stamp, dataset_version=GUARD, wer={GUARD_SPLIT: summary.wer},
        words={GUARD_SPLIT: summary.words}))


def judge(svc: Stores, candidate: ModelRecord, dataset: DatasetRecord, *,
          against: ModelRecord | None = None, say: Say = log.info) -> Decision:
    """Score the candidate and the promoted model (or `against`) on the test split, and
    promote the candidate if the gate says so; either way the record keeps the reason."""
    s = svc.settings
    against = against or baseline(svc)
    split = Split.TEST.value
    candidate = score(svc, candidate, dataset)
    against = score(svc, against, dataset)
    words = next(e.words.get(split, 0) for e in reversed(candidate.evaluations)
                 if e.dataset_version == dataset.version)
    guard = None
    if s.promote_guard is not None:
        candidate, against = guarded(svc, candidate), guarded(svc, against)
        guard = (candidate.wer_on(GUARD, GUARD_SPLIT) or 0.0,
                 against.wer_on(GUARD, GUARD_SPLIT) or 0.0)
    decision = gate(candidate.wer_on(dataset.version, split) or 0.0,
                    against.wer_on(dataset.version, split) or 0.0, s.promote_margin,
                    words=words, min_words=s.promote_min_words, guard=guard,
                    guard_tolerance=s.promote_guard_tolerance)
    if decision.promote:
        models.promote(svc, candidate.model_id, reason=decision.reason)
        say(f"{candidate.model_id} promoted over {against.model_id}: {decision.reason}")
    else:
        models.set_decision(svc, candidate, decision.reason)
        say(f"{candidate.model_id} stays a candidate: {decision.reason}")
    return decision


def vocabulary_candidate(svc: Stores, dataset: DatasetRecord, base: ModelRecord
                         ) -> ModelRecord | None:
    """The base with the terms corrections keep fixing as hotwords; None when there are
    none (or no more than the base already has)."""
    s = svc.settings
    rows = rows_of(svc, dataset, Split.TRAIN)
    terms = correction_terms(((r.machine_text, r.text) for r in rows),
                             min_count=s.vocabulary_min_count, max_terms=s.vocabulary_max_terms)
    hotwords = " ".join(terms)
    if not terms or hotwords == (base.hotwords or ""):
        return None
    name = base.name if base.name.endswith("-vocab") else f"{base.name}-vocab"
    return models.register_reference(
        svc, base.location, name=name, hotwords=hotwords,
        origin=ModelOrigin(kind=OriginKind.VOCABULARY, base=base.model_id,
                           dataset_version=dataset.version, details={"terms": len(terms)}))


def examples(svc: Stores, dataset: DatasetRecord, say: Say) -> list[Example]:
    examples, missing = [], 0
    for row in rows_of(svc, dataset, Split.TRAIN):
        bucket, key = row.audio.split("://", 1)[1].split("/", 1)
        if svc.blobs.stat(bucket, key) is None:
            missing += 1
            continue
        examples.append(Example(pcm_to_float(svc.blobs.get(bucket, key)[WAV_HEADER_BYTES:]),
                                row.text, row.language))
    if missing:
        say(f"{missing} train clips of dataset v{dataset.version} are gone; trained without")
    if not examples:
        raise ConfigError(f"dataset v{dataset.version} has no train clips left to learn from")
    return examples


def base_directory(svc: Stores, base: ModelRecord) -> Path:
    location = materialize(base.location, svc.blobs, svc.settings.state_dir)
    if location in PACKAGED:
        return packaged(location, svc.settings.state_dir)
    path = Path(location)
    if not (path / "model.bin").is_file():
        raise ConfigError(f"{base.model_id} lives at {base.location}, which is not a "
                          "CTranslate2 directory here; fine-tuning starts from one (a hub "
                          "name needs a network: register its directory instead)")
    return path


def fine_tuned_candidate(svc: Stores, dataset: DatasetRecord, base: ModelRecord, *,
                         say: Say, progress: Callable[[int, int, float], None] | None = None
                         ) -> tuple[ModelRecord, TrainReport]:
    """Train the base's weights on the train split, convert, and register the result."""
    from audiary.learning.training import fine_tune
    from audiary.learning.whisper import to_ctranslate2, to_transformers

    s = svc.settings
    clips = examples(svc, dataset, say)
    base_dir = base_directory(svc, base)
    config = TrainConfig(steps=s.train_steps, batch_size=s.train_batch_size,
                         grad_accum=s.train_grad_accum, learning_rate=s.train_learning_rate,
                         warmup_steps=s.train_warmup_steps, seed=s.train_seed)
    model, processor = to_transformers(base_dir)
    say(f"fine-tuning {base.model_id} on {len(clips)} clips of dataset v{dataset.version} "
        f"({config.steps} steps of {config.batch_size}x{config.grad_accum})")
    with tempfile.TemporaryDirectory(prefix="audiary-train-") as work:
        report = fine_tune(model, processor, clips, config, Path(work) / "trainer",
                           progress=progress)
        out = to_ctranslate2(model, processor, base_dir, Path(work) / "ct2")
        name = base.name if base.name.endswith("-ft") else f"{base.name}-ft"
        record = models.register_directory(svc, out, name=name, origin=ModelOrigin(
            kind=OriginKind.TRAINED, base=base.model_id, dataset_version=dataset.version,
            details={"steps": config.steps, "clips": len(clips),
                     "loss_first": round(report.losses[0], 4) if report.losses else -1.0,
                     "loss_last": round(report.losses[-1], 4) if report.losses else -1.0,
                     "seconds": round(report.seconds, 1), "device": report.device}))
    return record, report


def run(svc: Stores, dataset: DatasetRecord, *, vocabulary: bool = True,
        fine_tune: bool = True, say: Say = log.info,
        progress: Callable[[int, int, float], None] | None = None) -> list[Outcome]:
    """Make, score and gate the candidates for `dataset`; what each came to."""
    outcomes: list[Outcome] = []
    start = baseline(svc)
    if vocabulary:
        candidate = vocabulary_candidate(svc, dataset, start)
        if candidate is None:
            say("no vocabulary candidate: no term was corrected often enough "
                f"(AUDIARY_VOCABULARY_MIN_COUNT={svc.settings.vocabulary_min_count})")
        else:
            say(f"vocabulary candidate {candidate.model_id}: {candidate.hotwords}")
            decision = judge(svc, candidate, dataset, against=start, say=say)
            outcomes.append(Outcome(candidate, decision))
    if fine_tune:
        candidate, report = fine_tuned_candidate(svc, dataset, start, say=say,
                                                 progress=progress)
        against = models.promoted(svc) or start
        outcomes.append(Outcome(candidate, judge(svc, candidate, dataset, against=against, say=say),
                                report))
    return outcomes
