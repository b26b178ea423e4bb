"""The one place that picks adapters from settings.

Adapters hold network clients, so they are built once per process and per settings value
(settings are frozen and hashable); a handler calls `services(load_settings())` each time it
runs, which costs a dictionary look-up after the first call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from audiary.ports import BlobStore, JobStore, Publisher
from audiary.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    blobs: BlobStore
    publisher: Publisher
    jobs: JobStore


def _blob_store(settings: Settings) -> BlobStore:
    if settings.blob_backend == "memory":
        from audiary.adapters.memory import MemoryBlobStore

        return MemoryBlobStore()
    if settings.blob_backend == "s3":
        from audiary.adapters.s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    from audiary.adapters.gcs import GcsBlobStore

    return GcsBlobStore.from_settings(settings)


def _publisher(settings: Settings) -> Publisher:
    if settings.publisher_backend == "memory":
        from audiary.adapters.memory import MemoryPublisher

        return MemoryPublisher()
    from audiary.adapters.pubsub import PubSubPublisher

    return PubSubPublisher.from_settings(settings)


def _job_store(settings: Settings) -> JobStore:
    if settings.job_backend == "memory":
        from audiary.adapters.memory import MemoryJobStore

        return MemoryJobStore()
    from audiary.adapters.firestore import FirestoreJobStore

    return FirestoreJobStore.from_settings(settings)


@functools.cache
def services(settings: Settings) -> Services:
    """Adapters for `settings`, built on first use and shared afterwards."""
    return Services(
        settings=settings,
        blobs=_blob_store(settings),
        publisher=_publisher(settings),
        jobs=_job_store(settings),
    )
