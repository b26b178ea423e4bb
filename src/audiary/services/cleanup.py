"""Removing every trace of a job: what `DELETE /v1/jobs/{id}` does, and what a stage does when
it finds that the job it works on was deleted meanwhile (it may have written something since)."""

from __future__ import annotations

import logging

from audiary.domain.jobs import SourceObject
from audiary.domain.layout import job_prefix, quarantine_key, transcript_key
from audiary.ports import Stores

__all__ = ["DELETED", "purge", "purge_if_deleted"]

DELETED = "the job was deleted; nothing to do"

log = logging.getLogger(__name__)


def purge(svc: Stores, job_id: str, source: SourceObject) -> None:
    """Delete the job's audio (original, quarantine copy, canonical, chunk results),
    transcript and its corrected versions, note, the cached note only this job paid for,
    feedback documents and their audio copies. Absent things are skipped, so it is safe to
    repeat."""
    s = svc.settings
    svc.blobs.delete(source.bucket, source.name)
    svc.blobs.delete(s.uploads_bucket, quarantine_key(s.quarantine_prefix, job_id, source.name))
    for bucket in (s.work_bucket, s.feedback_bucket, s.transcripts_bucket):  # + versions
        for info in svc.blobs.list(bucket, job_prefix(job_id)):
            svc.blobs.delete(bucket, info.key)
    svc.blobs.delete(s.transcripts_bucket, transcript_key(job_id))
    note = svc.notes.get_note(job_id)
    for version in ([note, *note.history] if note is not None else []):
        cached = svc.notes.get_cached(version.cache_key) if version.cache_key else None
        if cached is not None and cached.job_id == job_id:
            svc.notes.delete_cached(version.cache_key)
    svc.notes.delete_note(job_id)
    svc.notes.delete_feedback(job_id)
    svc.notes.delete_review_items(job_id)
    log.info("removed the job's audio, transcript, note and feedback", extra={"job_id": job_id})


def purge_if_deleted(svc: Stores, job_id: str) -> bool:
    """If the job was deleted, remove what a stage may have written since, and say so."""
    tombstone = svc.jobs.deleted(job_id)
    if tombstone is None:
        return False
    purge(svc, job_id, tombstone.source)
    return True
