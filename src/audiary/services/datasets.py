"""The dataset builder: every corrected segment becomes a training clip, or a counted
rejection.

For each job whose transcript was corrected (in the page or in Label Studio), the segments
whose latest text differs from the machine's (version 1) are candidates: cut from the
canonical audio at the segment's time range, with the latest text. The quality filters
(domain.datasets) keep out what is too short or long (above Whisper's 30 s window), empty,
unchanged, spoken implausibly fast or slowly for its text, or too noisy; a job whose audio is
gone is counted, not an error. Clips go to `v<N>/clips/` of the datasets bucket and a JSONL
manifest per split to `v<N>/<split>.jsonl`; the split is a hash of the recording, so no
recording is in two splits. The record `datasets/v<N>` keeps rows, hours and rejections per
split and the filters used; when the train split reaches `AUDIARY_DATASET_READY_HOURS` the
builder publishes `dataset-ready`.

Each build is a new version made from all corrections so far (nothing is overwritten).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator

from audiary.domain.audio import SAMPLE_RATE, pcm_to_float, sample_range_bytes, wav_bytes
from audiary.domain.datasets import (
    Candidate,
    DatasetRecord,
    Filters,
    ManifestRow,
    Rejection,
    Split,
    corrections_digest,
    rejection,
    snr_db,
    split_of,
)
from audiary.domain.jobs import Job, utcnow
from audiary.domain.review import word_errors
from audiary.ports import Stores
from audiary.services.jobs import load_transcript
from audiary.settings import Settings
from audiary.wire import messages

__all__ = ["build", "build_if_changed", "candidates", "corrected_jobs", "filters_of",
           "ready_message"]

log = logging.getLogger(__name__)


def filters_of(settings: Settings) -> Filters:
    s = settings
    return Filters(min_s=s.dataset_min_clip_s, max_s=s.dataset_max_clip_s,
                   min_chars_per_s=s.dataset_min_chars_per_s,
                   max_chars_per_s=s.dataset_max_chars_per_s, min_snr_db=s.dataset_min_snr_db,
                   ratios=s.dataset_splits)


def candidates(svc: Stores, job: Job) -> Iterator[Candidate]:
    """The job's corrected segments: latest text against the machine's."""
    if job.transcript_version < 2:
        return
    machine = load_transcript(svc, job, 1)
    latest = load_transcript(svc, job)
    for index, (was, now) in enumerate(zip(machine.segments, latest.segments, strict=False)):
        if now.text != was.text:
            yield Candidate(job_id=job.job_id, index=index, start_s=now.start, end_s=now.end,
                            text=now.text, machine_text=was.text,
                            source_id=job.speaker or job.job_id,
                            model=job.model, language=job.language or machine.language)


def _clip(svc: Stores, job: Job, candidate: Candidate) -> bytes | None:
    """The candidate's PCM from the canonical audio, or None when that audio is gone."""
    if job.audio_uri is None:
        return None
    bucket, key = job.audio_uri.split("/", 1)
    if svc.blobs.stat(bucket, key) is None:
        return None
    first, last = sample_range_bytes(int(candidate.start_s * SAMPLE_RATE),
                                     int(candidate.end_s * SAMPLE_RATE))
    return svc.blobs.read_range(bucket, key, first, last)


def _row(svc: Stores, job: Job, candidate: Candidate, filters: Filters, prefix: str
         ) -> ManifestRow | Rejection:
    """The candidate's clip, stored, as a manifest row; or why it was refused."""
    s = svc.settings
    pcm = _clip(svc, job, candidate)
    snr = None if pcm is None else snr_db(pcm_to_float(pcm))
    if (why := rejection(candidate, snr, filters)) is not None:
        return why
    if pcm is None or snr is None:  # rejection() refuses a missing clip; for the type checker
        return Rejection.AUDIO_GONE
    key = f"{prefix}clips/{job.job_id}-{candidate.index}.wav"
    svc.blobs.put(s.datasets_bucket, key, wav_bytes(pcm), content_type="audio/wav")
    errors, words = word_errors(candidate.text, candidate.machine_text)
    scheme = "s3" if s.blob_backend == "s3" else "gs"
    return ManifestRow(
        audio=f"{scheme}://{s.datasets_bucket}/{key}", text=candidate.text.strip(),
        duration_s=round(candidate.duration_s, 3), language=candidate.language,
        job_id=job.job_id, segment=candidate.index, source_id=candidate.source_id,
        model=candidate.model, machine_text=candidate.machine_text.strip(),
        wer=errors / words if words else 0.0, snr_db=round(snr, 1),
        split=split_of(candidate.source_id, filters.ratios))


def corrected_jobs(svc: Stores) -> list[Job]:
    """Every job with a correction (a job deleted since is gone from datasets too)."""
    return [job for job in map(svc.jobs.get_job, svc.notes.corrected_job_ids())
            if job is not None]


def build_if_changed(svc: Stores) -> DatasetRecord | None:
    """`build`, unless the newest dataset was made from exactly these corrections (None)."""
    jobs = corrected_jobs(svc)
    built = svc.notes.list_datasets()
    if built and built[-1].corrections == _digest(jobs):
        log.info("dataset v%d already holds every correction", built[-1].version)
        return None
    return build(svc, jobs=jobs)


def _digest(jobs: list[Job]) -> str:
    return corrections_digest((j.job_id, j.transcript_version) for j in jobs)


def build(svc: Stores, *, progress: Callable[[int, int], None] | None = None,
          jobs: list[Job] | None = None) -> DatasetRecord:
    """Build the next dataset version from every correction so far (`jobs`, default
    `corrected_jobs`); `progress(done, total)` is called per job."""
    s = svc.settings
    filters = filters_of(s)
    version = max((r.version for r in svc.notes.list_datasets()), default=0) + 1
    prefix = f"v{version}/"
    rows: dict[Split, list[ManifestRow]] = {split: [] for split in Split}
    rejected: Counter[Rejection] = Counter()
    jobs = corrected_jobs(svc) if jobs is None else jobs
    for done, job in enumerate(jobs, 1):
        outcomes = [_row(svc, job, c, filters, prefix) for c in candidates(svc, job)]
        for outcome in outcomes:
            if isinstance(outcome, ManifestRow):
                rows[outcome.split].append(outcome)
            else:
                rejected[outcome] += 1
        if progress is not None:
            progress(done, len(jobs))
    manifests = {}
    for found in rows.values():  # an order of their own, not the job ids' (random)
        found.sort(key=lambda r: (r.source_id, r.text, r.job_id, r.segment))
    for split, found in rows.items():
        key = f"{prefix}{split.value}.jsonl"
        body = "".join(row.model_dump_json() + "\n" for row in found)
        svc.blobs.put(s.datasets_bucket, key, body.encode(), content_type="application/jsonl")
        manifests[split] = key
    hours = {split: round(sum(r.duration_s for r in found) / 3600, 4)
             for split, found in rows.items()}
    record = DatasetRecord(
        version=version, created_at=utcnow(), bucket=s.datasets_bucket, manifests=manifests,
        rows={split: len(found) for split, found in rows.items()}, hours=hours,
        rejected=dict(rejected), filters=filters,
        ready=hours[Split.TRAIN] >= s.dataset_ready_hours, ready_hours=s.dataset_ready_hours,
        corrections=_digest(jobs))
    svc.notes.put_dataset(record)
    log.info("dataset v%d: %s rows, %s hours, rejected %s", version, record.rows, hours,
             dict(rejected))
    if record.ready:
        svc.publisher.publish(s.topic_dataset_ready, messages.encode(ready_message(record)),
                              {"dataset_version": str(version)})
    return record


def ready_message(record: DatasetRecord) -> messages.DatasetReady:
    """What `dataset-ready` says of a dataset."""
    return messages.DatasetReady(
        version=record.version, bucket=record.bucket,
        manifests={k.value: v for k, v in record.manifests.items()},
        train_hours=record.hours[Split.TRAIN])
