"""In-memory adapters for unit tests: same contract as the real ones (tests/integration).

They keep what they store as copies, so a caller mutating an object it passed in or got back
cannot change the stored state, just as with a real server. All are thread-safe.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Self

from audiary.domain.datasets import DatasetRecord, EvaluationRecord
from audiary.domain.jobs import (
    TERMINAL,
    Chunk,
    ChunkStatus,
    FanIn,
    Job,
    JobError,
    JobStatus,
    Lease,
    Tombstone,
    can_advance,
    lease_free,
    utcnow,
)
from audiary.domain.keys import ApiKey, Webhook
from audiary.domain.models import ModelRecord
from audiary.domain.notes import Feedback, NoteRecord
from audiary.domain.review import ReviewItem
from audiary.errors import NotFoundError, StateError
from audiary.observability import messaging
from audiary.ports import (
    DELIVERED,
    BlobInfo,
    BlobStore,
    JobStore,
    KeyStore,
    NoteStore,
    Publisher,
    SignedUpload,
)
from audiary.settings import Settings

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class _Blob:
    data: bytes
    generation: str
    content_type: str
    metadata: Mapping[str, str]


class MemoryBlobStore(BlobStore):
    """Buckets as dicts. `list()` fills only key, size and generation, like S3 listings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, _Blob]] = {}
        self._generations = itertools.count(1)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    def ensure_bucket(self, bucket: str) -> None:
        with self._lock:
            self._buckets.setdefault(bucket, {})

    def _objects(self, bucket: str) -> dict[str, _Blob]:
        try:
            return self._buckets[bucket]
        except KeyError:
            raise NotFoundError(f"bucket {bucket!r} does not exist") from None

    def _blob(self, bucket: str, key: str) -> _Blob:
        blob = self._objects(bucket).get(key)
        if blob is None:
            raise NotFoundError(f"object {bucket}/{key} does not exist")
        return blob

    @staticmethod
    def _info(bucket: str, key: str, blob: _Blob) -> BlobInfo:
        return BlobInfo(
            bucket=bucket,
            key=key,
            size=len(blob.data),
            generation=blob.generation,
            content_type=blob.content_type,
            metadata=dict(blob.metadata),
        )

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        with self._lock:
            blob = _Blob(
                data=bytes(data),
                generation=str(next(self._generations)),
                content_type=content_type or DEFAULT_CONTENT_TYPE,
                metadata=dict(metadata or {}),
            )
            self._objects(bucket)[key] = blob
            return self._info(bucket, key, blob)

    def upload_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        return self.put(
            bucket, key, path.read_bytes(), content_type=content_type, metadata=metadata
        )

    def upload_stream(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        return self.put(bucket, key, stream.read(), content_type=content_type, metadata=metadata)

    def get(self, bucket: str, key: str) -> bytes:
        with self._lock:
            return self._blob(bucket, key).data

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        path.write_bytes(self.get(bucket, key))

    def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"bad byte range [{start}, {end})")
        with self._lock:
            return self._blob(bucket, key).data[start:end]

    def stat(self, bucket: str, key: str) -> BlobInfo | None:
        with self._lock:
            blob = self._buckets.get(bucket, {}).get(key)
            return None if blob is None else self._info(bucket, key, blob)

    def copy(self, bucket: str, key: str, dest_bucket: str, dest_key: str) -> BlobInfo:
        with self._lock:
            source = self._blob(bucket, key)
            blob = _Blob(
                data=source.data,
                generation=str(next(self._generations)),
                content_type=source.content_type,
                metadata=dict(source.metadata),
            )
            self._objects(dest_bucket)[dest_key] = blob
            return self._info(dest_bucket, dest_key, blob)

    def list(self, bucket: str, prefix: str = "") -> list[BlobInfo]:
        with self._lock:
            # Listings of S3 carry no content type or metadata; keep the fake no richer.
            return [
                BlobInfo(bucket=bucket, key=key, size=len(blob.data), generation=blob.generation)
                for key, blob in sorted(self._objects(bucket).items())
                if key.startswith(prefix)
            ]

    def delete(self, bucket: str, key: str) -> None:
        with self._lock:
            self._buckets.get(bucket, {}).pop(key, None)


    def update_metadata(self, bucket: str, key: str, metadata: Mapping[str, str]) -> BlobInfo:
        with self._lock:
            blob = self._blob(bucket, key)
            updated = replace(blob, metadata={**blob.metadata, **metadata})
            self._objects(bucket)[key] = updated
            return self._info(bucket, key, updated)

    def signed_put_url(
        self, bucket: str, key: str, *, content_type: str, size: int, expires_s: int
    ) -> SignedUpload:
        # Nothing can PUT to memory over HTTP; the URL only identifies the object.
        return SignedUpload(
            url=f"memory://{bucket}/{key}",
            method="PUT",
            headers={"Content-Type": content_type, "Content-Length": str(size)},
            expires_at=utcnow() + timedelta(seconds=expires_s),
        )

    def signed_get_url(self, bucket: str, key: str, *, expires_s: int) -> str:
        return f"memory://{bucket}/{key}"

@dataclass(frozen=True)
class PublishedMessage:
    message_id: str
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)


class MemoryPublisher(Publisher):
    """Records every message; tests read them back with `messages(topic)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[str, list[PublishedMessage]] = defaultdict(list)
        self._ids = itertools.count(1)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Record the message, in a `send <topic>` span as the Pub/Sub publisher does."""
        return messaging.send(topic, data, attributes,
                              lambda attrs: self._record(topic, data, attrs))

    def _record(self, topic: str, data: bytes, attrs: dict[str, str]) -> str:
        # Pub/Sub only carries string attributes; fail here as the real client would.
        for name, value in attrs.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"Pub/Sub attributes must be str -> str, got {name!r}: {value!r}")
        with self._lock:
            message = PublishedMessage(str(next(self._ids)), bytes(data), attrs)
            self._topics[topic].append(message)
            return message.message_id

    def messages(self, topic: str) -> list[PublishedMessage]:
        """Everything published to `topic`, oldest first."""
        with self._lock:
            return list(self._topics.get(topic, []))

    def published(self, topic: str) -> list[tuple[bytes, dict[str, str]]]:
        """(data, attributes) of everything published to `topic`, oldest first."""
        return [(m.data, dict(m.attributes)) for m in self.messages(topic)]

    def clear(self) -> None:
        with self._lock:
            self._topics.clear()


def set_path(doc: dict[str, Any], dotted: str, value: object) -> None:
    """Set `a.b.c` inside nested dicts, as a Firestore update does with a field path."""
    *parents, last = dotted.split(".")
    node = doc
    for name in parents:
        child = node.get(name)
        if not isinstance(child, dict):
            child = node[name] = {}
        node = child
    node[last] = copy.deepcopy(value)


def check_plain_fields(fields: Mapping[str, object]) -> None:
    if any(name == "status" or name.startswith("status.") for name in fields):
        raise StateError("the job status changes only through advance()")


class MemoryJobStore(JobStore):
    """Jobs and chunks as dicts under one lock, with the semantics of `FirestoreJobStore`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._chunks: dict[str, dict[int, dict[str, Any]]] = {}
        self._tombstones: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    def _job_doc(self, job_id: str) -> dict[str, Any]:
        doc = self._jobs.get(job_id)
        if doc is None:
            raise NotFoundError(f"job {job_id} does not exist")
        return doc

    def create_job(self, job: Job) -> tuple[Job, bool]:
        with self._lock:
            existing = self._jobs.get(job.job_id)
            if existing is not None:
                return Job.from_doc(copy.deepcopy(existing)), False
            doc = new_job_doc(job)
            self._jobs[job.job_id] = doc
            return Job.from_doc(copy.deepcopy(doc)), True

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            doc = self._jobs.get(job_id)
            return None if doc is None else Job.from_doc(copy.deepcopy(doc))

    def update_job(self, job_id: str, fields: Mapping[str, object]) -> None:
        check_plain_fields(fields)
        with self._lock:
            doc = self._job_doc(job_id)
            for name, value in fields.items():
                set_path(doc, name, value)

    def advance(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: JobError | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> bool:
        check_plain_fields(fields or {})
        with self._lock:
            doc = self._job_doc(job_id)
            if not can_advance(JobStatus(doc["status"]), status):
                return False
            for name, value in advance_updates(status, error, fields).items():
                set_path(doc, name, value)
            return True

    def claim(self, job_id: str, stage: str, holder: str, *, lease_s: float,
              now: datetime) -> bool:
        with self._lock:
            doc = self._job_doc(job_id)
            current = (doc.get("leases") or {}).get(stage)
            if not lease_free(Lease.model_validate(current) if current else None, holder, now):
                return False
            set_path(doc, f"leases.{stage}", lease_doc(holder, now, lease_s))
            return True

    def put_chunks(self, job_id: str, chunks: Sequence[Chunk]) -> None:
        with self._lock:
            doc = self._job_doc(job_id)
            stored = self._chunks.setdefault(job_id, {})
            for chunk in chunks:
                stored.setdefault(chunk.index, chunk_doc(job_id, chunk))
            doc["chunks_total"] = len(chunks)

    def get_chunks(self, job_id: str) -> list[Chunk]:
        with self._lock:
            stored = self._chunks.get(job_id, {})
            return [Chunk.from_doc(copy.deepcopy(stored[i])) for i in sorted(stored)]

    def _chunk(self, job_id: str, index: int) -> dict[str, Any]:
        doc = self._chunks.get(job_id, {}).get(index)
        if doc is None:
            raise NotFoundError(f"chunk {index} of job {job_id} does not exist")
        return doc

    def start_chunk(self, job_id: str, index: int) -> Chunk:
        with self._lock:
            doc = self._chunk(job_id, index)
            doc["attempts"] = int(doc.get("attempts", 0)) + 1
            doc["started_at"] = utcnow()
            return Chunk.from_doc(copy.deepcopy(doc))

    def abandon_chunk(self, job_id: str, index: int) -> None:
        with self._lock:
            doc = self._chunk(job_id, index)
            if doc["status"] != ChunkStatus.DONE:
                doc["attempts"] = max(0, int(doc.get("attempts", 0)) - 1)

    def complete_chunk(
        self,
        job_id: str,
        index: int,
        *,
        text: str,
        segments: list[dict[str, object]] | None,
        segments_uri: str | None,
        language: str | None = None,
        claim: str | None = None,  # nothing to save here: the check under the lock is exact
    ) -> FanIn:
        with self._lock:
            job = self._job_doc(job_id)
            chunk = self._chunk(job_id, index)
            done, total = int(job.get("chunks_done", 0)), int(job.get("chunks_total", 0))
            if chunk["status"] == ChunkStatus.DONE:
                return FanIn(counted=False, chunks_done=done, chunks_total=total)
            chunk.update(chunk_result(text, segments, segments_uri, language))
            job["chunks_done"] = done + 1
            job["progress_at"] = utcnow()
            return FanIn(counted=True, chunks_done=done + 1, chunks_total=total)

    def list_jobs(
        self, limit: int = 50, *, owner: str | None = None,
        received_before: datetime | None = None,
    ) -> list[Job]:
        received = JobStatus.RECEIVED.value
        with self._lock:
            docs = sorted(
                (
                    d for d in self._jobs.values()
                    if received in d["timestamps"]
                    and (owner is None or d.get("owner") == owner)
                    and (received_before is None or d["timestamps"][received] < received_before)
                ),
                key=lambda d: d["timestamps"][received],
                reverse=True,
            )
            return [Job.from_doc(copy.deepcopy(d)) for d in docs[:limit]]

    def list_stalled(self, before: datetime, limit: int = 100) -> list[Job]:
        with self._lock:
            docs = sorted(
                (d for d in self._jobs.values()
                 if d.get("progress_at") is not None and d["progress_at"] < before),
                key=lambda d: d["progress_at"],
            )
            return [Job.from_doc(copy.deepcopy(d)) for d in docs[:limit]]

    def delete_job(self, job_id: str) -> bool:
        with self._lock:
            self._chunks.pop(job_id, None)
            doc = self._jobs.pop(job_id, None)
            if doc is None:
                return False
            self._tombstones[job_id] = Tombstone(
                job_id=job_id, source=doc["source"], deleted_at=utcnow()).model_dump_json()
            return True

    def deleted(self, job_id: str) -> Tombstone | None:
        with self._lock:
            raw = self._tombstones.get(job_id)
        return Tombstone.model_validate_json(raw) if raw else None

    def count_by_status(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        with self._lock:
            for doc in self._jobs.values():
                counts[JobStatus(doc["status"])] += 1
        return counts


# Document shapes, shared with FirestoreJobStore so that both adapters store the same thing.


def new_job_doc(job: Job) -> dict[str, Any]:
    """The stored form of a new job; the time of its current state is recorded if missing.

    RECEIVED is always stamped because `list_jobs` orders by it.
    """
    doc = job.to_doc()
    now = utcnow()
    timestamps: dict[str, Any] = doc.setdefault("timestamps", {})
    timestamps.setdefault(JobStatus.RECEIVED.value, now)
    timestamps.setdefault(job.status.value, now)
    doc["status"] = job.status.value
    if job.status not in TERMINAL:
        doc["progress_at"] = doc.get("progress_at") or now
    stored: dict[str, Any] = plain(doc)
    return stored


def advance_updates(
    status: JobStatus, error: JobError | None, fields: Mapping[str, object] | None
) -> dict[str, object]:
    updates: dict[str, object] = dict(fields or {})
    now = utcnow()
    updates["status"] = status.value
    updates[f"timestamps.{status.value}"] = now
    # An ended job leaves the sweeper's query (a range filter skips null values).
    updates["progress_at"] = None if status in TERMINAL else now
    if error is not None:
        updates["error"] = error.model_dump(mode="python")
    return updates


def lease_doc(holder: str, now: datetime, lease_s: float) -> dict[str, Any]:
    return Lease(holder=holder, until=now + timedelta(seconds=lease_s)).model_dump(mode="python")


def chunk_doc(job_id: str, chunk: Chunk) -> dict[str, Any]:
    doc = chunk.to_doc()
    doc["job_id"] = job_id
    stored: dict[str, Any] = plain(doc)
    return stored


def chunk_result(
    text: str, segments: list[dict[str, object]] | None, segments_uri: str | None,
    language: str | None = None,
) -> dict[str, Any]:
    return {
        "status": ChunkStatus.DONE.value,
        "text": text,
        "segments": copy.deepcopy(segments),
        "segments_uri": segments_uri,
        "language": language,
        "completed_at": utcnow(),
    }


def plain(value: Any) -> Any:
    """Enums to their values, recursively: what a document store gives back."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, JobStatus | ChunkStatus):
        return value.value
    return value


class MemoryNoteStore(NoteStore):
    """Notes and the LLM cache in dictionaries (copies in and out, like a real store)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notes: dict[str, str] = {}
        self._cache: dict[str, str] = {}
        self._feedback: dict[str, str] = {}
        self._review: dict[str, str] = {}
        self._datasets: dict[int, str] = {}
        self._evaluations: dict[str, str] = {}
        self._models: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    def get_note(self, job_id: str) -> NoteRecord | None:
        with self._lock:
            raw = self._notes.get(job_id)
        return NoteRecord.model_validate_json(raw) if raw else None

    def put_note(self, record: NoteRecord) -> None:
        with self._lock:
            self._notes[record.job_id] = record.model_dump_json()

    def get_cached(self, cache_key: str) -> NoteRecord | None:
        with self._lock:
            raw = self._cache.get(cache_key)
        return NoteRecord.model_validate_json(raw) if raw else None

    def put_cached(self, record: NoteRecord) -> None:
        with self._lock:
            self._cache[record.cache_key] = record.model_dump_json()

    def delete_note(self, job_id: str) -> None:
        with self._lock:
            self._notes.pop(job_id, None)

    def delete_cached(self, cache_key: str) -> None:
        with self._lock:
            self._cache.pop(cache_key, None)

    def put_feedback(self, feedback: Feedback) -> None:
        with self._lock:
            self._feedback[feedback.feedback_id] = feedback.model_dump_json()

    def list_feedback(self, job_id: str) -> list[Feedback]:
        with self._lock:
            items = [Feedback.model_validate_json(raw) for raw in self._feedback.values()]
        return sorted((f for f in items if f.job_id == job_id),
                      key=lambda f: (f.created_at, f.feedback_id))

    def delete_feedback(self, job_id: str) -> int:
        with self._lock:
            ids = [i for i, raw in self._feedback.items()
                   if Feedback.model_validate_json(raw).job_id == job_id]
            for feedback_id in ids:
                del self._feedback[feedback_id]
        return len(ids)

    def add_review_item(self, item: ReviewItem) -> bool:
        with self._lock:
            if item.item_id in self._review:
                return False
            self._review[item.item_id] = item.model_dump_json()
            return True

    def get_review_item(self, item_id: str) -> ReviewItem | None:
        with self._lock:
            raw = self._review.get(item_id)
        return ReviewItem.model_validate_json(raw) if raw else None

    def update_review_item(self, item_id: str, fields: Mapping[str, Any]) -> None:
        with self._lock:
            item = ReviewItem.model_validate_json(self._review[item_id])
            self._review[item_id] = item.model_copy(update=dict(fields)).model_dump_json()

    def list_review_items(self, *, status: str | None = None,
                          job_id: str | None = None) -> list[ReviewItem]:
        with self._lock:
            items = [ReviewItem.model_validate_json(raw) for raw in self._review.values()]
        return sorted((i for i in items if (status is None or i.status == status)
                       and (job_id is None or i.job_id == job_id)),
                      key=lambda i: (i.queued_at, i.item_id))

    def delete_review_items(self, job_id: str) -> int:
        with self._lock:
            ids = [i for i, raw in self._review.items()
                   if ReviewItem.model_validate_json(raw).job_id == job_id]
            for item_id in ids:
                del self._review[item_id]
        return len(ids)

    def corrected_job_ids(self) -> list[str]:
        with self._lock:
            items = [Feedback.model_validate_json(raw) for raw in self._feedback.values()]
        return sorted({f.job_id for f in items if f.transcript_version is not None})

    def put_dataset(self, record: DatasetRecord) -> None:
        with self._lock:
            self._datasets[record.version] = record.model_dump_json()

    def list_datasets(self) -> list[DatasetRecord]:
        with self._lock:
            return [DatasetRecord.model_validate_json(self._datasets[v])
                    for v in sorted(self._datasets)]

    def put_evaluation(self, record: EvaluationRecord) -> None:
        with self._lock:
            self._evaluations[record.evaluation_id] = record.model_dump_json()

    def list_evaluations(self, *, dataset_version: int | None = None
                         ) -> list[EvaluationRecord]:
        with self._lock:
            found = [EvaluationRecord.model_validate_json(r) for r in self._evaluations.values()]
        return sorted((r for r in found
                       if dataset_version is None or r.dataset_version == dataset_version),
                      key=lambda r: (r.created_at, r.evaluation_id))

    def put_model(self, record: ModelRecord) -> None:
        with self._lock:
            self._models[record.model_id] = record.model_dump_json()

    def get_model(self, model_id: str) -> ModelRecord | None:
        with self._lock:
            raw = self._models.get(model_id)
        return None if raw is None else ModelRecord.model_validate_json(raw)

    def list_models(self) -> list[ModelRecord]:
        with self._lock:
            found = [ModelRecord.model_validate_json(r) for r in self._models.values()]
        return sorted(found, key=lambda r: (r.created_at, r.name, r.version))


class MemoryKeyStore(KeyStore):
    """API keys and webhooks in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        self._webhooks: dict[str, str] = {}
        self._deliveries: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    def put_key(self, key: ApiKey) -> None:
        with self._lock:
            self._keys[key.key_id] = key.model_dump_json()

    def get_key(self, key_id: str) -> ApiKey | None:
        with self._lock:
            raw = self._keys.get(key_id)
        return ApiKey.model_validate_json(raw) if raw else None

    def list_keys(self) -> list[ApiKey]:
        with self._lock:
            keys = [ApiKey.model_validate_json(raw) for raw in self._keys.values()]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        key = self.get_key(key_id)
        if key is None:
            return False
        if key.revoked_at is None:
            self.put_key(key.model_copy(update={"revoked_at": at}))
        return True

    def put_webhook(self, webhook: Webhook) -> None:
        with self._lock:
            self._webhooks[webhook.webhook_id] = webhook.model_dump_json()

    def list_webhooks(self, owner: str) -> list[Webhook]:
        with self._lock:
            hooks = [Webhook.model_validate_json(raw) for raw in self._webhooks.values()]
        return sorted((h for h in hooks if h.owner == owner),
                      key=lambda h: (h.created_at, h.webhook_id))

    def delete_webhook(self, owner: str, webhook_id: str) -> bool:
        with self._lock:
            raw = self._webhooks.get(webhook_id)
            if raw is None or Webhook.model_validate_json(raw).owner != owner:
                return False
            del self._webhooks[webhook_id]
            return True

    def claim_delivery(self, delivery_id: str, holder: str, *, lease_s: float,
                       now: datetime) -> bool:
        with self._lock:
            doc = self._deliveries.setdefault(delivery_id, {})
            current = doc.get("lease")
            if doc.get("outcome") or not lease_free(
                    Lease.model_validate(current) if current else None, holder, now):
                return False
            doc["lease"] = lease_doc(holder, now, lease_s)
            return True

    def record_delivery(self, delivery_id: str, at: datetime,
                        outcome: str = DELIVERED) -> None:
        with self._lock:
            doc = self._deliveries.setdefault(delivery_id, {})
            if not doc.get("outcome"):
                doc.update(outcome=outcome, at=at)

    def delivery_outcome(self, delivery_id: str) -> str | None:
        with self._lock:
            outcome = self._deliveries.get(delivery_id, {}).get("outcome")
            return str(outcome) if outcome else None
