"""Jobs, chunks and the job state machine (DESIGN.md section 2)."""

from __future__ import annotations

import enum
import hashlib
import itertools
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from audiary.errors import StateError


class JobStatus(enum.StrEnum):
    RECEIVED = "RECEIVED"
    QUEUED = "QUEUED"
    TRANSCRIBING = "TRANSCRIBING"
    TRANSCRIBED = "TRANSCRIBED"
    SUMMARIZING = "SUMMARIZING"
    DONE = "DONE"
    FAILED = "FAILED"
    REJECTED = "REJECTED"


_ORDER = [
    JobStatus.RECEIVED,
    JobStatus.QUEUED,
    JobStatus.TRANSCRIBING,
    JobStatus.TRANSCRIBED,
    JobStatus.SUMMARIZING,
    JobStatus.DONE,
]
TERMINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.REJECTED})


def can_advance(current: JobStatus, target: JobStatus) -> bool:
    """Whether a job in `current` may move to `target`: forward only, never out of an end state.

    FAILED may follow any live state; REJECTED only RECEIVED (rejection happens at ingest).
    """
    if current in TERMINAL:
        return False
    if target is JobStatus.FAILED:
        return True
    if target is JobStatus.REJECTED:
        return current is JobStatus.RECEIVED
    return _ORDER.index(target) > _ORDER.index(current)


def check_advance(current: JobStatus, target: JobStatus) -> None:
    """Raise `StateError` unless `can_advance(current, target)`."""
    if not can_advance(current, target):
        raise StateError(f"a job cannot move from {current} to {target}")


def job_id_for(bucket: str, name: str, generation: str) -> str:
    """Stable job id of one upload: the same object generation always gives the same id."""
    digest = hashlib.sha256(f"{bucket}/{name}#{generation}".encode()).hexdigest()
    return digest[:24]


def utcnow() -> datetime:
    return datetime.now(UTC)


class SourceObject(BaseModel):
    bucket: str
    name: str
    generation: str
    size: int | None = None
    content_type: str | None = None


class JobError(BaseModel):
    code: str
    message: str
    stage: str


class Lease(BaseModel):
    """Who does a stage's one-off work (writing the note) until when."""

    holder: str
    until: datetime


def lease_free(lease: Lease | None, holder: str, now: datetime) -> bool:
    """Whether `holder` may take a stage whose lease is `lease`: nobody holds it, `holder`
    does (a redelivery of its own message), or the holder's time ran out (it died)."""
    return lease is None or lease.holder == holder or lease.until <= now


class Job(BaseModel):
    job_id: str
    source: SourceObject
    status: JobStatus = JobStatus.RECEIVED
    error: JobError | None = None
    duration_s: float | None = None
    language: str | None = None
    model: str | None = None
    chunks_total: int = 0
    chunks_done: int = 0
    uncertain_segments: int = 0  # segments of the transcript the decoder was unsure of
    transcript_version: int = 1  # 1: the machine's; each saved correction adds one
    ingest_attempts: int = 0
    chunks_published: bool = False
    summarize_attempts: int = 0
    note_provider: str | None = None
    cost_usd: float | None = None
    cost_per_audio_hour_usd: float | None = None
    audio_uri: str | None = None
    quarantine_uri: str | None = None
    transcript_uri: str | None = None
    text: str | None = None
    owner: str | None = None
    speaker: str | None = None  # who speaks, as the uploader says: datasets split by it
    correlation_id: str = ""
    # Effects that belong to one transition, so that repeats are no-ops: which stage ended the
    # job, and whether `job-finished` and `transcript-ready` went out.
    finished_by: str | None = None
    finished_announced: bool = False
    transcript_announced: bool = False
    leases: dict[str, Lease] = Field(default_factory=dict)
    timestamps: dict[str, datetime] = Field(default_factory=dict)
    # When the job last moved (a transition or a chunk result); None once it has ended. The
    # sweeper looks for active jobs whose `progress_at` is old, and `redriven_at` records its
    # one re-drive (see services.sweeper).
    progress_at: datetime | None = None
    redriven_at: datetime | None = None

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Job:
        return cls.model_validate(doc)

    def stage_seconds(self) -> dict[str, float]:
        """Seconds spent in each state that has been left, read off the transition timestamps."""
        seen = sorted(self.timestamps.items(), key=lambda kv: kv[1])
        return {
            state: (later - at).total_seconds()
            for (state, at), (_, later) in itertools.pairwise(seen)
        }


def new_job(
    job_id: str, source: SourceObject, *, owner: str | None = None,
    received_at: datetime | None = None, speaker: str | None = None,
) -> Job:
    """A job that has just been received; its id doubles as the correlation id."""
    timestamps = {JobStatus.RECEIVED.value: received_at} if received_at else {}
    return Job(job_id=job_id, correlation_id=job_id, owner=owner, source=source,
               timestamps=timestamps, speaker=speaker)


class Tombstone(BaseModel):
    """What stays of a deleted job: enough to tell every later stage to do nothing, and to
    find what a stage in flight may still write."""

    job_id: str
    source: SourceObject
    deleted_at: datetime


class ChunkStatus(enum.StrEnum):
    PENDING = "PENDING"
    DONE = "DONE"


class Chunk(BaseModel):
    job_id: str
    index: int
    start_sample: int
    end_sample: int
    status: ChunkStatus = ChunkStatus.PENDING
    attempts: int = 0
    text: str | None = None
    segments: list[dict[str, Any]] | None = None
    segments_uri: str | None = None
    language: str | None = None  # what the chunk was decoded as (detected or configured)
    started_at: datetime | None = None  # by the latest delivery
    completed_at: datetime | None = None
    # The store's mark of the chunk as `start_chunk` left it (Firestore: its update time),
    # which `complete_chunk(claim=...)` checks instead of reading the chunk again; not stored.
    claim: str | None = Field(default=None, exclude=True)

    @property
    def samples(self) -> int:
        return self.end_sample - self.start_sample

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Chunk:
        return cls.model_validate(doc)


class FanIn(BaseModel):
    """What recording one chunk result did to its job."""

    counted: bool  # False when this chunk had already been recorded (a repeat delivery)
    chunks_done: int
    chunks_total: int

    @property
    def complete(self) -> bool:
        return self.chunks_total > 0 and self.chunks_done >= self.chunks_total
