"""WER of a model on a dataset built from corrections (`audiary eval`).

Every manifest row's clip is transcribed by the model and scored against the row's text with
the project's normaliser (evaluation.wer), per split and per source (recording); the result is
stored as an evaluation record, which the model registry and the promotion gate read. A row
whose clip is gone is counted as missing, not scored.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from audiary.domain.audio import WAV_HEADER_BYTES, pcm_to_float
from audiary.domain.datasets import (
    DatasetRecord,
    EvaluationRecord,
    ManifestRow,
    Split,
    WerSummary,
)
from audiary.domain.jobs import utcnow
from audiary.errors import NotFoundError
from audiary.evaluation.wer import wer
from audiary.ports import Stores, Transcriber

__all__ = ["evaluate", "guard_wer", "rows_of"]


def rows_of(svc: Stores, record: DatasetRecord, split: Split) -> list[ManifestRow]:
    raw = svc.blobs.get(record.bucket, record.manifests[split]).decode()
    return [ManifestRow.model_validate_json(line) for line in raw.splitlines() if line.strip()]


def _summary(pairs: Sequence[tuple[str, str]]) -> WerSummary:
    result = wer([r for r, _ in pairs], [h for _, h in pairs])
    return WerSummary(wer=result.wer, errors=result.errors, words=result.words,
                      clips=len(pairs))


def evaluate(svc: Stores, model: Transcriber, version: int, *,
             splits: Sequence[Split] = tuple(Split),
             progress: Callable[[int, int], None] | None = None) -> EvaluationRecord:
    """Score `model` on dataset `version` and store the evaluation record."""
    found = {r.version: r for r in svc.notes.list_datasets()}
    if version not in found:
        known = ", ".join(f"v{v}" for v in sorted(found)) or "none yet"
        raise NotFoundError(f"no dataset v{version} (built: {known}); run "
                            "`audiary dataset build` first")
    record = found[version]
    rows = [(split, row) for split in splits for row in rows_of(svc, record, split)]
    by_split: dict[Split, list[tuple[str, str]]] = defaultdict(list)
    by_source: dict[str, list[tuple[str, str]]] = defaultdict(list)
    missing = 0
    for done, (split, row) in enumerate(rows, 1):
        bucket, key = row.audio.split("://", 1)[1].split("/", 1)
        if svc.blobs.stat(bucket, key) is None:
            missing += 1
        else:
            samples = pcm_to_float(svc.blobs.get(bucket, key)[WAV_HEADER_BYTES:])
            said = " ".join(s.text.strip() for s in model.transcribe(
                samples, language=row.language))
            by_split[split].append((row.text, said))
            by_source[row.source_id].append((row.text, said))
        if progress is not None:
            progress(done, len(rows))
    name = model.model_name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    evaluation = EvaluationRecord(
        evaluation_id=f"{digest}-v{version}-{utcnow():%Y%m%dT%H%M%S}", model=name,
        dataset_version=version, created_at=utcnow(),
        splits={split: _summary(by_split[split]) for split in splits},
        sources={source: _summary(pairs) for source, pairs in sorted(by_source.items())},
        missing_clips=missing)
    svc.notes.put_evaluation(evaluation)
    return evaluation


def guard_wer(model: Transcriber, manifest: Path) -> WerSummary:
    """The model's WER on a guard set: a JSONL manifest of recordings (`audio`, relative to
    the manifest) and what was said (`text_normalized` where given, else `text`), in the
    format of ../shared/speech/manifest.jsonl."""
    from faster_whisper.audio import decode_audio

    if not manifest.is_file():
        raise NotFoundError(f"no guard set at {manifest} (AUDIARY_PROMOTE_GUARD)")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    pairs = []
    for row in rows:
        samples = decode_audio(str(manifest.parent / row["audio"]))
        said = " ".join(s.text.strip() for s in model.transcribe(samples))
        pairs.append((row.get("text_normalized") or row["text"], said))
    return _summary(pairs)
