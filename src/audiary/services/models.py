"""The model registry: where each speech model's weights live, what it scored, which one the
transcriber serves.

Weights live in the models bucket under `<name>@<version>/` (a CTranslate2 directory); the
record `models/{name@version}` holds the location, the origin, the evaluations and the state.
Registering copies a directory in as a new version of its name, as a candidate. `promote`
makes one model the promoted one and retires the one it replaces; the gate
(domain.models.gate, applied by the training run) decides when a candidate deserves that.

The transcriber asks `serving_model` when it starts: `AUDIARY_MODEL_PATH` if set (a setting
still overrides), else the promoted model, else the packaged default. A promotion therefore
reaches a running transcriber on its next start (a new instance or revision), not mid-flight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from audiary.domain.datasets import EvaluationRecord
from audiary.domain.jobs import utcnow
from audiary.domain.models import (
    ModelEvaluation,
    ModelOrigin,
    ModelRecord,
    ModelState,
    OriginKind,
    check_name,
    model_id,
)
from audiary.errors import ConfigError, NotFoundError, StateError
from audiary.ports import Stores

__all__ = [
    "MODEL_FILES",
    "ServingModel",
    "add_evaluation",
    "get",
    "promote",
    "promoted",
    "record_evaluation",
    "register_directory",
    "register_reference",
    "serving_model",
    "serving_of",
]

log = logging.getLogger(__name__)

# What a CTranslate2 Whisper directory holds that faster-whisper reads.
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt",
               "vocabulary.json", "preprocessor_config.json")


@dataclass(frozen=True)
class ServingModel:
    """What the transcriber loads: a location for model_store.materialize, the hotwords to
    decode with, and the name jobs record."""

    location: str
    name: str
    hotwords: str | None = None
    record: ModelRecord | None = None


def get(svc: Stores, text: str) -> ModelRecord:
    record = svc.notes.get_model(text)
    if record is None:
        known = ", ".join(r.model_id for r in svc.notes.list_models()) or "none yet"
        raise NotFoundError(f"no model {text} in the registry (registered: {known})")
    return record


def _next_version(svc: Stores, name: str) -> int:
    return max((r.version for r in svc.notes.list_models() if r.name == name), default=0) + 1


def register_directory(svc: Stores, directory: Path, *, name: str, origin: ModelOrigin,
                       hotwords: str | None = None) -> ModelRecord:
    """Copy a CTranslate2 Whisper directory into the models bucket as the next version of
    `name`, and record it as a candidate."""
    check_name(name)
    if not (directory / "model.bin").is_file():
        raise ConfigError(f"{directory} is not a CTranslate2 model directory: no model.bin")
    s = svc.settings
    version = _next_version(svc, name)
    prefix = f"{model_id(name, version)}/"
    files = [directory / f for f in MODEL_FILES if (directory / f).is_file()]
    for path in files:
        svc.blobs.upload_file(s.models_bucket, prefix + path.name, path)
    scheme = "s3" if s.blob_backend == "s3" else "gs"
    record = ModelRecord(name=name, version=version, location=f"{scheme}://{s.models_bucket}/"
                         f"{prefix}", origin=origin, hotwords=hotwords, created_at=utcnow())
    svc.notes.put_model(record)
    log.info("registered %s from %s (%d files)", record.model_id, directory, len(files))
    return record


def register_reference(svc: Stores, location: str, *, name: str, origin: ModelOrigin,
                       hotwords: str | None = None) -> ModelRecord:
    """Record a model whose weights stay where they are (a hub name, or a base's location
    with hotwords on top) as the next version of `name`, a candidate."""
    check_name(name)
    record = ModelRecord(name=name, version=_next_version(svc, name), location=location,
                         origin=origin, hotwords=hotwords, created_at=utcnow())
    svc.notes.put_model(record)
    log.info("registered %s at %s", record.model_id, location)
    return record


def promoted(svc: Stores) -> ModelRecord | None:
    """The promoted model (the latest promotion, should two ever be recorded), or None."""
    found = [r for r in svc.notes.list_models() if r.state is ModelState.PROMOTED]
    return max(found, key=lambda r: (r.promoted_at or r.created_at), default=None)


def promote(svc: Stores, text: str, *, reason: str) -> ModelRecord:
    """Make `name@version` the promoted model; the one it replaces is retired."""
    record = get(svc, text)
    if record.state is ModelState.RETIRED:
        raise StateError(f"{text} is retired; register it again to bring it back")
    before = promoted(svc)
    now = utcnow()
    record = record.model_copy(update={"state": ModelState.PROMOTED, "promoted_at": now,
                                       "decision": reason})
    svc.notes.put_model(record)  # first the new one: a crash in between leaves two promoted,
    for old in svc.notes.list_models():  # and the latest promotion wins (see `promoted`)
        if old.state is ModelState.PROMOTED and old.model_id != record.model_id:
            svc.notes.put_model(old.model_copy(update={
                "state": ModelState.RETIRED, "retired_at": now,
                "decision": f"replaced by {record.model_id}"}))
    log.info("promoted %s (was %s): %s", record.model_id,
             before.model_id if before else "the packaged default", reason)
    return record


def _stored(svc: Stores, record: ModelRecord) -> ModelRecord:
    """The record as stored now (`record` itself if it is not stored yet)."""
    return svc.notes.get_model(record.model_id) or record


def _save(svc: Stores, record: ModelRecord) -> ModelRecord:
    svc.notes.put_model(record)
    return record


def record_evaluation(svc: Stores, record: ModelRecord, entry: ModelEvaluation
                      ) -> ModelRecord:
    """Keep one more evaluation's WER on the model's record."""
    current = _stored(svc, record)
    return _save(svc, current.model_copy(update={"evaluations": [*current.evaluations, entry]}))


def add_evaluation(svc: Stores, record: ModelRecord, evaluation: EvaluationRecord
                   ) -> ModelRecord:
    """Keep a stored evaluation's per-split WER on the model's record."""
    return record_evaluation(svc, record, ModelEvaluation(
        evaluation_id=evaluation.evaluation_id, dataset_version=evaluation.dataset_version,
        wer={split.value: s.wer for split, s in evaluation.splits.items()},
        words={split.value: s.words for split, s in evaluation.splits.items()}))


def set_decision(svc: Stores, record: ModelRecord, reason: str) -> ModelRecord:
    return _save(svc, _stored(svc, record).model_copy(update={"decision": reason}))


def serving_model(svc: Stores) -> ServingModel:
    """What the transcriber should load now: the setting, else the promoted model, else the
    packaged default."""
    s = svc.settings
    if s.model_path:
        return ServingModel(location=s.model_path, name=s.model_path)
    record = promoted(svc)
    if record is None:
        return ServingModel(location=s.model, name=s.model)
    return serving_of(record)


def serving_of(record: ModelRecord) -> ServingModel:
    """What the transcriber loads to run this record's model."""
    return ServingModel(location=record.location, name=record.model_id,
                        hotwords=record.hotwords, record=record)


def packaged_origin(package: str) -> ModelOrigin:
    return ModelOrigin(kind=OriginKind.PACKAGED, source=package)
