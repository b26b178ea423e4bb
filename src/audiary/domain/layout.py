"""Where a job's objects live in the buckets: one place, so that deleting a job finds them all."""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["canonical_key", "chunk_segments_key", "job_prefix", "quarantine_key",
           "transcript_key", "transcript_version_key"]


def job_prefix(job_id: str) -> str:
    """Prefix of everything a job keeps in the work and userfeedback buckets."""
    return f"{job_id}/"


def canonical_key(job_id: str) -> str:
    """Key of a job's canonical WAV in the work bucket."""
    return f"{job_prefix(job_id)}audio.wav"


def chunk_segments_key(job_id: str, index: int) -> str:
    """Key of a chunk's segments in the work bucket, when too large for its document."""
    return f"{job_prefix(job_id)}chunks/{index:05d}.json"


def transcript_key(job_id: str) -> str:
    """Key of a job's transcript in the transcripts bucket."""
    return f"{job_id}.json"


def transcript_version_key(job_id: str, version: int) -> str:
    """Key of one version of a job's transcript: 1 is the machine's (`transcript_key`), each
    saved correction the next one, under the job's prefix; none is ever overwritten."""
    return transcript_key(job_id) if version == 1 else f"{job_prefix(job_id)}v{version}.json"


def quarantine_key(quarantine_prefix: str, job_id: str, name: str) -> str:
    """Key of a rejected upload's copy in the uploads bucket."""
    return f"{quarantine_prefix}{job_id}/{PurePosixPath(name).name}"
