"""`JobStore` on Cloud Firestore (or its emulator via FIRESTORE_EMULATOR_HOST).

Documents: `<jobs>/{job_id}` and `<jobs>/{job_id}/<chunks>/{index:05d}`; the zero-padded id
keeps chunk documents in index order in the console. Every read-modify-write runs in a
Firestore transaction, so concurrent chunk completions count each chunk exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1 import DocumentReference, DocumentSnapshot, Transaction
from google.cloud.firestore_v1.base_query import FieldFilter
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from audiary import names
from audiary.adapters.memory import (
    advance_updates,
    check_plain_fields,
    chunk_doc,
    chunk_result,
    lease_doc,
    new_job_doc,
)
from audiary.domain.datasets import DatasetRecord, EvaluationRecord
from audiary.domain.jobs import (
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
from audiary.errors import NotFoundError
from audiary.ports import DELIVERED, JobStore, KeyStore, NoteStore
from audiary.settings import Settings

# The client retries a transaction that aborts on contention. Chunks of one job finishing at
# once all write the job document, so allow more than the default 5 tries.
TRANSACTION_ATTEMPTS = 3

Snapshot = DocumentSnapshot[DocumentReference]
T = TypeVar("T")


def _contended(exc: BaseException) -> bool:
    """The client's own retries ran out on contention (the emulator: "Transaction lock
    timeout")."""
    return isinstance(exc, gexc.Aborted) or (
        isinstance(exc, ValueError) and "Failed to commit transaction" in str(exc))


def transact(client: firestore.Client, run: Callable[[Transaction], T]) -> tuple[T, Transaction]:
    """Run a `@firestore.transactional` function; returns its result and the transaction.

    The client retries an aborted transaction at once, so many writers of one document can
    keep aborting each other (a job's chunks finishing together, duplicate deliveries
    claiming a lease). When its tries run out, run it again after a random pause, for up to a
    minute, so contention slows a writer down instead of failing it.
    """
    for attempt in Retrying(retry=retry_if_exception(_contended), reraise=True,
                            wait=wait_random_exponential(multiplier=0.05, max=2.0),
                            stop=stop_after_delay(60)):
        with attempt:
            txn = client.transaction(max_attempts=TRANSACTION_ATTEMPTS)
            return run(txn), txn
    raise AssertionError("unreachable: Retrying either returns or raises")


def firestore_client(project: str, database: str, emulator_host: str | None) -> firestore.Client:
    if not emulator_host:
        return firestore.Client(project=project, database=database)
    client = firestore.Client(
        project=project,
        database=database,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
    )
    # The client only reads FIRESTORE_EMULATOR_HOST at construction; setting its emulator host
    # directly gives the same plain-gRPC channel and "owner" token without changing the
    # process environment.
    client._emulator_host = emulator_host
    return client


def chunk_doc_id(index: int) -> str:
    return f"{index:05d}"


def _data(snapshot: Snapshot) -> dict[str, Any]:
    return snapshot.to_dict() or {}


class FirestoreJobStore(JobStore):
    """Jobs and their chunks in Firestore; the client is created once."""

    def __init__(
        self,
        project: str,
        *,
        database: str = "(default)",
        jobs_collection: str = names.COLLECTION_JOBS,
        chunks_collection: str = names.COLLECTION_CHUNKS,
        tombstones_collection: str = names.COLLECTION_TOMBSTONES,
        emulator_host: str | None = None,
    ) -> None:
        self._client = firestore_client(project, database, emulator_host)
        self._jobs = self._client.collection(jobs_collection)
        self._chunks_collection = chunks_collection
        self._tombstones = self._client.collection(tombstones_collection)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.project_id,
            database=settings.firestore_database,
            jobs_collection=settings.jobs_collection,
            tombstones_collection=settings.tombstones_collection,
            emulator_host=settings.firestore_emulator_host,
        )

    def _job_ref(self, job_id: str) -> DocumentReference:
        return self._jobs.document(job_id)

    def _chunk_ref(self, job_id: str, index: int) -> DocumentReference:
        chunks = self._job_ref(job_id).collection(self._chunks_collection)
        ref: DocumentReference = chunks.document(chunk_doc_id(index))
        return ref

    @staticmethod
    def _read(txn: Transaction, ref: DocumentReference) -> Snapshot:
        snapshot: Snapshot = ref.get(transaction=txn)
        return snapshot

    def _read_job(self, txn: Transaction, job_id: str) -> dict[str, Any]:
        snapshot = self._read(txn, self._job_ref(job_id))
        if not snapshot.exists:
            raise NotFoundError(f"job {job_id} does not exist")
        return _data(snapshot)

    def create_job(self, job: Job) -> tuple[Job, bool]:
        ref = self._job_ref(job.job_id)

        @firestore.transactional
        def run(txn: Transaction) -> tuple[Job, bool]:
            snapshot = self._read(txn, ref)
            if snapshot.exists:
                return Job.from_doc(_data(snapshot)), False
            doc = new_job_doc(job)
            txn.create(ref, doc)
            return Job.from_doc(doc), True

        result: tuple[Job, bool] = transact(self._client, run)[0]
        return result

    def get_job(self, job_id: str) -> Job | None:
        snapshot = self._job_ref(job_id).get()
        return Job.from_doc(_data(snapshot)) if snapshot.exists else None

    def update_job(self, job_id: str, fields: Mapping[str, object]) -> None:
        check_plain_fields(fields)
        try:
            self._job_ref(job_id).update(dict(fields))
        except gexc.NotFound as exc:
            raise NotFoundError(f"job {job_id} does not exist") from exc

    def advance(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: JobError | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> bool:
        check_plain_fields(fields or {})
        ref = self._job_ref(job_id)

        @firestore.transactional
        def run(txn: Transaction) -> bool:
            current = JobStatus(self._read_job(txn, job_id)["status"])
            if not can_advance(current, status):
                return False
            txn.update(ref, advance_updates(status, error, fields))
            return True

        moved: bool = transact(self._client, run)[0]
        return moved

    def claim(self, job_id: str, stage: str, holder: str, *, lease_s: float,
              now: datetime) -> bool:
        ref = self._job_ref(job_id)

        @firestore.transactional
        def run(txn: Transaction) -> bool:
            current = (self._read_job(txn, job_id).get("leases") or {}).get(stage)
            if not lease_free(Lease.model_validate(current) if current else None, holder, now):
                return False
            txn.update(ref, {f"leases.{stage}": lease_doc(holder, now, lease_s)})
            return True

        claimed: bool = transact(self._client, run)[0]
        return claimed

    def put_chunks(self, job_id: str, chunks: Sequence[Chunk]) -> None:
        job_ref = self._job_ref(job_id)
        refs = {chunk.index: self._chunk_ref(job_id, chunk.index) for chunk in chunks}

        @firestore.transactional
        def run(txn: Transaction) -> None:
            self._read_job(txn, job_id)
            existing = {s.reference.id for s in txn.get_all(list(refs.values())) if s.exists}
            for chunk in chunks:
                ref = refs[chunk.index]
                # A retried ingest must not wipe results the transcriber already stored.
                if ref.id not in existing:
                    txn.set(ref, chunk_doc(job_id, chunk))
            txn.update(job_ref, {"chunks_total": len(chunks)})

        transact(self._client, run)

    def get_chunks(self, job_id: str) -> list[Chunk]:
        docs = self._job_ref(job_id).collection(self._chunks_collection).order_by("index").stream()
        return [Chunk.from_doc(_data(doc)) for doc in docs]

    def start_chunk(self, job_id: str, index: int) -> Chunk:
        ref = self._chunk_ref(job_id, index)

        @firestore.transactional
        def run(txn: Transaction) -> Chunk:
            snapshot = self._read(txn, ref)
            if not snapshot.exists:
                raise NotFoundError(f"chunk {index} of job {job_id} does not exist")
            doc = _data(snapshot)
            doc["attempts"] = int(doc.get("attempts", 0)) + 1
            doc["started_at"] = utcnow()
            txn.update(ref, {"attempts": doc["attempts"], "started_at": doc["started_at"]})
            return Chunk.from_doc(doc)

        chunk: Chunk
        chunk, txn = transact(self._client, run)
        # The chunk's update time as this commit left it: complete_chunk's precondition.
        written = txn.write_results or []
        if len(written) == 1 and written[0].update_time:
            chunk.claim = written[0].update_time.rfc3339()
        return chunk

    def abandon_chunk(self, job_id: str, index: int) -> None:
        ref = self._chunk_ref(job_id, index)

        @firestore.transactional
        def run(txn: Transaction) -> None:
            snapshot = self._read(txn, ref)
            if not snapshot.exists:
                raise NotFoundError(f"chunk {index} of job {job_id} does not exist")
            doc = _data(snapshot)
            if doc.get("status") != ChunkStatus.DONE.value:
                txn.update(ref, {"attempts": max(0, int(doc.get("attempts", 0)) - 1)})

        transact(self._client, run)

    def complete_chunk(
        self,
        job_id: str,
        index: int,
        *,
        text: str,
        segments: list[dict[str, object]] | None,
        segments_uri: str | None,
        language: str | None = None,
        claim: str | None = None,
    ) -> FanIn:
        job_ref = self._job_ref(job_id)
        chunk_ref = self._chunk_ref(job_id, index)
        result = chunk_result(text, segments, segments_uri, language)
        if claim is not None and (fan_in := self._complete_claimed(job_ref, chunk_ref, result,
                                                                   claim)) is not None:
            return fan_in

        # The transaction reads only the chunk and bumps the job's counter with a server-side
        # increment. Reading the job document too would make every chunk's transaction
        # contend for it: the emulator then stalls on lock timeouts and real Firestore aborts
        # and retries. The commit returns the counter's new value, so exactly one caller sees
        # the last chunk land.
        @firestore.transactional
        def run(txn: Transaction) -> bool:
            chunk = self._read(txn, chunk_ref)
            if not chunk.exists:
                raise NotFoundError(f"chunk {index} of job {job_id} does not exist")
            if _data(chunk).get("status") == ChunkStatus.DONE.value:
                return False
            txn.update(chunk_ref, result)
            # progress_at is a plain value, so the increment stays the only transform.
            txn.update(job_ref, {"chunks_done": firestore.Increment(1), "progress_at": utcnow()})
            return True

        try:
            counted, txn = transact(self._client, run)
        except gexc.NotFound as exc:
            raise NotFoundError(f"job {job_id} does not exist") from exc
        job = job_ref.get()
        if not job.exists:
            raise NotFoundError(f"job {job_id} does not exist")
        total = int(_data(job).get("chunks_total", 0))
        if not counted:
            return FanIn(
                counted=False, chunks_done=int(_data(job).get("chunks_done", 0)), chunks_total=total
            )
        # Writes come back in order: [chunk update, job update with its increment].
        results = txn.write_results or []
        done = int(results[1].transform_results[0].integer_value)
        return FanIn(counted=True, chunks_done=done, chunks_total=total)

    def _complete_claimed(self, job_ref: DocumentReference, chunk_ref: DocumentReference,
                          result: dict[str, Any], claim: str) -> FanIn | None:
        """complete_chunk in one write: the chunk's result on the precondition that its update
        time is still `claim` (nothing, no other delivery, wrote it since start_chunk), and the
        job's increment, atomically, without a transaction's read. None when the chunk changed:
        the caller's transaction then reads it."""
        batch = self._client.batch()
        unchanged = self._client.write_option(
            last_update_time=DatetimeWithNanoseconds.from_rfc3339(claim))  # type: ignore[no-untyped-call]
        batch.update(chunk_ref, result, option=unchanged)
        batch.update(job_ref, {"chunks_done": firestore.Increment(1), "progress_at": utcnow()})
        try:
            results = batch.commit()
        except (gexc.FailedPrecondition, gexc.Aborted):
            # Another delivery started or finished the chunk since, or contention aborted the
            # commit (the emulator: a lock timeout while chunk transactions hold the job
            # document). Nothing was written: the transaction, which reads and retries, does it.
            return None
        except gexc.NotFound as exc:
            raise NotFoundError(f"job {job_ref.id} or its chunk {chunk_ref.id} does not exist"
                                ) from exc
        job = job_ref.get()
        if not job.exists:
            raise NotFoundError(f"job {job_ref.id} does not exist")
        done = int(results[1].transform_results[0].integer_value)
        return FanIn(counted=True, chunks_done=done,
                     chunks_total=int(_data(job).get("chunks_total", 0)))

    def list_jobs(
        self, limit: int = 50, *, owner: str | None = None,
        received_before: datetime | None = None,
    ) -> list[Job]:
        # With an owner this needs the composite index (owner, timestamps.RECEIVED desc),
        # which the Pulumi program creates.
        received = f"timestamps.{JobStatus.RECEIVED.value}"
        query: Any = self._jobs
        if owner is not None:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        if received_before is not None:
            query = query.where(filter=FieldFilter(received, "<", received_before))
        query = query.order_by(received, direction=firestore.Query.DESCENDING).limit(limit)
        return [Job.from_doc(_data(doc)) for doc in query.stream()]

    def list_stalled(self, before: datetime, limit: int = 100) -> list[Job]:
        # One range filter on one field: served by Firestore's automatic single-field index.
        query: Any = (self._jobs.where(filter=FieldFilter("progress_at", "<", before))
                      .order_by("progress_at").limit(limit))
        return [Job.from_doc(_data(doc)) for doc in query.stream()]

    def count_by_status(self) -> dict[JobStatus, int]:
        # Count aggregations: the server counts, no job document is read.
        counts: dict[JobStatus, int] = {}
        for status in JobStatus:
            query: Any = self._jobs.where(filter=FieldFilter("status", "==", status.value))
            result = query.count(alias="n").get()
            counts[status] = int(result[0][0].value) if result and result[0] else 0
        return counts

    def delete_job(self, job_id: str) -> bool:
        ref = self._job_ref(job_id)
        snapshot = ref.get()
        if not snapshot.exists:
            return False
        # The tombstone first: from then on every stage leaves the job alone.
        self._tombstones.document(job_id).set(Tombstone(
            job_id=job_id, source=_data(snapshot)["source"], deleted_at=utcnow(),
        ).model_dump(mode="python"))
        for chunk in ref.collection(self._chunks_collection).stream():
            chunk.reference.delete()
        ref.delete()
        return True

    def deleted(self, job_id: str) -> Tombstone | None:
        snapshot = self._tombstones.document(job_id).get()
        return Tombstone.model_validate(_data(snapshot)) if snapshot.exists else None


class FirestoreNoteStore(NoteStore):
    """Notes in `<notes>/{job_id}`, the LLM cache in `<llm-cache>/{cache_key}`."""

    def __init__(
        self,
        project: str,
        *,
        database: str = "(default)",
        notes_collection: str = names.COLLECTION_NOTES,
        cache_collection: str = names.COLLECTION_LLM_CACHE,
        feedback_collection: str = names.COLLECTION_FEEDBACK,
        review_collection: str = names.COLLECTION_REVIEW,
        datasets_collection: str = names.COLLECTION_DATASETS,
        evaluations_collection: str = names.COLLECTION_EVALUATIONS,
        models_collection: str = names.COLLECTION_MODELS,
        cache_ttl_days: int = 90,
        emulator_host: str | None = None,
    ) -> None:
        client = firestore_client(project, database, emulator_host)
        self._cache_ttl_days = cache_ttl_days
        self._notes = client.collection(notes_collection)
        self._cache = client.collection(cache_collection)
        self._feedback = client.collection(feedback_collection)
        self._review = client.collection(review_collection)
        self._datasets = client.collection(datasets_collection)
        self._evaluations = client.collection(evaluations_collection)
        self._models = client.collection(models_collection)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.project_id,
            database=settings.firestore_database,
            notes_collection=settings.notes_collection,
            cache_collection=settings.llm_cache_collection,
            feedback_collection=settings.feedback_collection,
            review_collection=settings.review_collection,
            datasets_collection=settings.datasets_collection,
            evaluations_collection=settings.evaluations_collection,
            models_collection=settings.models_collection,
            cache_ttl_days=settings.llm_cache_ttl_days,
            emulator_host=settings.firestore_emulator_host,
        )

    @staticmethod
    def _record(snapshot: Snapshot) -> NoteRecord | None:
        return NoteRecord.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def get_note(self, job_id: str) -> NoteRecord | None:
        return self._record(self._notes.document(job_id).get())

    def put_note(self, record: NoteRecord) -> None:
        self._notes.document(record.job_id).set(record.model_dump(mode="python"))

    def get_cached(self, cache_key: str) -> NoteRecord | None:
        return self._record(self._cache.document(cache_key).get())

    def put_cached(self, record: NoteRecord) -> None:
        # `expires_at` drives the Firestore TTL policy the Pulumi program sets on this collection.
        self._cache.document(record.cache_key).set({
            **record.model_dump(mode="python"),
            "expires_at": datetime.now(UTC) + timedelta(days=self._cache_ttl_days),
        })

    def delete_note(self, job_id: str) -> None:
        self._notes.document(job_id).delete()

    def delete_cached(self, cache_key: str) -> None:
        self._cache.document(cache_key).delete()

    def put_feedback(self, feedback: Feedback) -> None:
        self._feedback.document(feedback.feedback_id).set(feedback.model_dump(mode="python"))

    def list_feedback(self, job_id: str) -> list[Feedback]:
        docs = self._feedback.where(filter=FieldFilter("job_id", "==", job_id)).stream()
        items = [Feedback.model_validate(d.to_dict()) for d in docs]
        return sorted(items, key=lambda f: (f.created_at, f.feedback_id))

    def delete_feedback(self, job_id: str) -> int:
        docs = list(self._feedback.where(filter=FieldFilter("job_id", "==", job_id)).stream())
        for doc in docs:
            doc.reference.delete()
        return len(docs)

    def add_review_item(self, item: ReviewItem) -> bool:
        try:
            self._review.document(item.item_id).create(item.model_dump(mode="python"))
        except gexc.Conflict:  # AlreadyExists
            return False
        return True

    def get_review_item(self, item_id: str) -> ReviewItem | None:
        snapshot = self._review.document(item_id).get()
        return ReviewItem.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def update_review_item(self, item_id: str, fields: Mapping[str, Any]) -> None:
        update = ReviewItem.model_validate({**_data(self._review.document(item_id).get()),
                                            **fields}).model_dump(mode="python")
        self._review.document(item_id).update({k: update[k] for k in fields})

    def list_review_items(self, *, status: str | None = None,
                          job_id: str | None = None) -> list[ReviewItem]:
        query: Any = self._review
        if status is not None:
            query = query.where(filter=FieldFilter("status", "==", str(status)))
        if job_id is not None:
            query = query.where(filter=FieldFilter("job_id", "==", job_id))
        items = [ReviewItem.model_validate(d.to_dict()) for d in query.stream()]
        return sorted(items, key=lambda i: (i.queued_at, i.item_id))

    def delete_review_items(self, job_id: str) -> int:
        docs = list(self._review.where(filter=FieldFilter("job_id", "==", job_id)).stream())
        for doc in docs:
            doc.reference.delete()
        return len(docs)

    def corrected_job_ids(self) -> list[str]:
        # Feedback that made a version has transcript_version 2 or more (one range filter:
        # the automatic single-field index serves it).
        docs = self._feedback.where(filter=FieldFilter("transcript_version", ">", 1)).stream()
        return sorted({str(_data(d)["job_id"]) for d in docs})

    def put_dataset(self, record: DatasetRecord) -> None:
        self._datasets.document(f"v{record.version}").set(record.model_dump(mode="json"))

    def list_datasets(self) -> list[DatasetRecord]:
        records = [DatasetRecord.model_validate(d.to_dict()) for d in self._datasets.stream()]
        return sorted(records, key=lambda r: r.version)

    def put_evaluation(self, record: EvaluationRecord) -> None:
        self._evaluations.document(record.evaluation_id).set(record.model_dump(mode="json"))

    def list_evaluations(self, *, dataset_version: int | None = None
                         ) -> list[EvaluationRecord]:
        query: Any = self._evaluations
        if dataset_version is not None:
            query = query.where(filter=FieldFilter("dataset_version", "==", dataset_version))
        records = [EvaluationRecord.model_validate(d.to_dict()) for d in query.stream()]
        return sorted(records, key=lambda r: (r.created_at, r.evaluation_id))

    def put_model(self, record: ModelRecord) -> None:
        self._models.document(record.model_id).set(record.model_dump(mode="json"))

    def get_model(self, model_id: str) -> ModelRecord | None:
        snapshot = self._models.document(model_id).get()
        return ModelRecord.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def list_models(self) -> list[ModelRecord]:
        records = [ModelRecord.model_validate(d.to_dict()) for d in self._models.stream()]
        return sorted(records, key=lambda r: (r.created_at, r.name, r.version))


class FirestoreKeyStore(KeyStore):
    """Keys in `<api-keys>/{key_id}`, webhooks in `<webhooks>/{webhook_id}`, deliveries that
    their claims and outcomes in `<webhook-deliveries>/{delivery_id}`."""

    def __init__(
        self,
        project: str,
        *,
        database: str = "(default)",
        keys_collection: str = names.COLLECTION_API_KEYS,
        webhooks_collection: str = names.COLLECTION_WEBHOOKS,
        deliveries_collection: str = names.COLLECTION_DELIVERIES,
        emulator_host: str | None = None,
    ) -> None:
        client = firestore_client(project, database, emulator_host)
        self._client = client
        self._keys = client.collection(keys_collection)
        self._webhooks = client.collection(webhooks_collection)
        self._deliveries = client.collection(deliveries_collection)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.project_id,
            database=settings.firestore_database,
            keys_collection=settings.api_keys_collection,
            webhooks_collection=settings.webhooks_collection,
            deliveries_collection=settings.deliveries_collection,
            emulator_host=settings.firestore_emulator_host,
        )

    def put_key(self, key: ApiKey) -> None:
        self._keys.document(key.key_id).set(key.model_dump(mode="python"))

    def get_key(self, key_id: str) -> ApiKey | None:
        snapshot = self._keys.document(key_id).get()
        return ApiKey.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def list_keys(self) -> list[ApiKey]:
        keys = [ApiKey.model_validate(d.to_dict()) for d in self._keys.stream()]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        ref = self._keys.document(key_id)
        if not ref.get().exists:
            return False
        ref.update({"revoked_at": at})
        return True

    def put_webhook(self, webhook: Webhook) -> None:
        self._webhooks.document(webhook.webhook_id).set(webhook.model_dump(mode="python"))

    def list_webhooks(self, owner: str) -> list[Webhook]:
        docs = self._webhooks.where(filter=FieldFilter("owner", "==", owner)).stream()
        hooks = [Webhook.model_validate(d.to_dict()) for d in docs]
        return sorted(hooks, key=lambda h: (h.created_at, h.webhook_id))

    def delete_webhook(self, owner: str, webhook_id: str) -> bool:
        ref = self._webhooks.document(webhook_id)
        snapshot = ref.get()
        if not snapshot.exists or _data(snapshot).get("owner") != owner:
            return False
        ref.delete()
        return True

    def claim_delivery(self, delivery_id: str, holder: str, *, lease_s: float,
                       now: datetime) -> bool:
        ref = self._deliveries.document(delivery_id)

        @firestore.transactional
        def run(txn: Transaction) -> bool:
            doc = _data(FirestoreJobStore._read(txn, ref))
            current = doc.get("lease")
            if doc.get("outcome") or not lease_free(
                    Lease.model_validate(current) if current else None, holder, now):
                return False
            txn.set(ref, {"lease": lease_doc(holder, now, lease_s)}, merge=True)
            return True

        claimed: bool = transact(self._client, run)[0]
        return claimed

    def record_delivery(self, delivery_id: str, at: datetime,
                        outcome: str = DELIVERED) -> None:
        ref = self._deliveries.document(delivery_id)

        @firestore.transactional
        def run(txn: Transaction) -> None:
            if not _data(FirestoreJobStore._read(txn, ref)).get("outcome"):  # the first stays
                txn.set(ref, {"outcome": outcome, "at": at}, merge=True)

        transact(self._client, run)

    def delivery_outcome(self, delivery_id: str) -> str | None:
        outcome = _data(self._deliveries.document(delivery_id).get()).get("outcome")
        return str(outcome) if outcome else None
